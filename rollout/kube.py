"""The controller's Kubernetes side: the ConfigMap that holds TF Serving's model config, and
the Lease that makes one replica the leader (docs/ROLLOUT.md, "The model config").

Both use the official `kubernetes` client and optimistic concurrency: every update carries
the resourceVersion the controller last read, so the API server answers 409 when anyone
else changed the object in between, and the controller finds out instead of silently
overwriting their change.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from rollout.errors import ModelConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIGMAP_NAME = "tf-serving-models"
DEFAULT_CONFIGMAP_KEY = "models.config"
DEFAULT_LEASE_NAME = "rollout-controller"
# Who wrote the ConfigMap: `kubectl get configmap -l app.kubernetes.io/managed-by=...`.
MANAGED_BY = {"app.kubernetes.io/managed-by": "rollout-controller"}


class ConfigMapConflictError(ModelConfigError):
    """The ConfigMap changed (or appeared) since the controller read it; nothing was written.

    The caller reads again and recomputes its change; retrying the same write blindly would
    lose the other writer's update.
    """


def load_kube_config() -> client.ApiClient:
    """An API client for the pod's service account, or the kubeconfig outside a cluster."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def pod_identity() -> str:
    """This replica's name in the Lease: POD_NAME (downward API), else HOSTNAME, else the
    host name (a pod's host name is its name)."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


def micro_time(moment: float) -> datetime:
    """A Lease MicroTime, never on a whole second.

    The API server parses MicroTime as RFC 3339 with exactly six fractional digits, while
    the client serialises a datetime with `isoformat()`, which drops the fraction when it is
    zero: a write on a whole second would be refused. One microsecond later is harmless.
    """
    value = datetime.fromtimestamp(moment, UTC)
    return value if value.microsecond else value.replace(microsecond=1)


def timestamp(value: datetime | str | None) -> float | None:
    """Seconds since the epoch of a time the client deserialised (or left as text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # the API speaks UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class ConfigMapModelConfigStore:
    """The model config kept in one key of one ConfigMap (a `ModelConfigStore`).

    `read_text` remembers the resourceVersion it saw; `write_text` replaces the object only
    if it still has that version (or creates it, if `read_text` found none), so two writers
    can never both succeed from the same read. A successful write moves the remembered
    version on, so the controller's own consecutive writes need no read in between.
    """

    def __init__(
        self,
        namespace: str,
        name: str = DEFAULT_CONFIGMAP_NAME,
        key: str = DEFAULT_CONFIGMAP_KEY,
        api: client.CoreV1Api | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key
        self.api = api or client.CoreV1Api(load_kube_config())
        # The object as last read or written: None before any read, False when absent.
        self._seen: Any = None

    def read_text(self) -> str | None:
        """The config text, or None when the ConfigMap or its key does not exist.
        ModelConfigError when the API server cannot be asked."""
        try:
            return self._read_text()
        except (ApiException, HTTPError, OSError) as error:
            raise ModelConfigError(f"cannot read ConfigMap {self.name}: {error}") from None

    def write_text(self, text: str) -> None:
        """Replace the key's text atomically (other keys kept); create the ConfigMap if it
        did not exist when last read. ConfigMapConflictError when it changed since;
        ModelConfigError when the API server cannot be asked."""
        try:
            self._write_text(text)
        except ConfigMapConflictError:
            raise
        except (ApiException, HTTPError, OSError) as error:
            raise ModelConfigError(f"cannot write ConfigMap {self.name}: {error}") from None

    def _read_text(self) -> str | None:
        try:
            config_map = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            self._seen = False
            return None
        self._seen = config_map
        return (config_map.data or {}).get(self.key)

    def _write_text(self, text: str) -> None:
        if self._seen is None:
            self._read_text()
        if self._seen is False:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "labels": dict(MANAGED_BY)},
                "data": {self.key: text},
            }
            try:
                self._seen = self.api.create_namespaced_config_map(self.namespace, body)
            except ApiException as error:
                if error.status == 409:
                    self._seen = None
                    raise ConfigMapConflictError(
                        f"ConfigMap {self.namespace}/{self.name} was created by someone else "
                        "since it was read as missing; read it again"
                    ) from error
                raise
            return
        seen = self._seen
        metadata = seen.metadata
        # A PUT of the whole object with the version read: the API server's precondition.
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": metadata.resource_version,
                "labels": metadata.labels,
                "annotations": metadata.annotations,
            },
            "data": {**(seen.data or {}), self.key: text},
            "binaryData": seen.binary_data,
        }
        try:
            self._seen = self.api.replace_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as error:
            if error.status in (404, 409):
                self._seen = None
                raise ConfigMapConflictError(
                    f"ConfigMap {self.namespace}/{self.name} changed since resourceVersion "
                    f"{metadata.resource_version} was read (HTTP {error.status}); read it "
                    "again"
                ) from error
            raise


def ensure_model_config(store: Any, seed_text: str) -> bool:
    """Write `seed_text` to the store only if it holds no config yet; True if it did.

    The seed is the kustomize-generated seed ConfigMap, mounted as a file. An existing
    config is never overwritten: it carries the rollout state. If another writer creates
    it first, that config wins and this returns False.
    """
    if store.read_text() is not None:
        return False
    try:
        store.write_text(seed_text)
    except ConfigMapConflictError:
        logger.info("the model config appeared while seeding it; keeping the existing one")
        return False
    logger.info("seeded the model config from the shipped seed")
    return True


class LeaseLeaderElector:
    """Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules.

    The controller calls `try_acquire_or_renew()` every `retry_period` seconds and acts only
    while it returns True. It acquires a Lease that is free (no holder) or expired (its
    renewTime plus leaseDurationSeconds has passed), renews one it holds, and never takes
    one another live holder renews. Every write carries the resourceVersion read, so of two
    contenders only one wins; the loser's 409 means "not leader this round".

    A leader that cannot renew (API errors) keeps leading only until `renew_deadline`
    after its last successful renewal, which is shorter than the lease duration the others
    wait out: the margin between the two absorbs clock skew between nodes.
    """

    def __init__(
        self,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        api: client.CoordinationV1Api | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("expected retry_period < renew_deadline < lease_duration")
        self.namespace = namespace
        self.name = name
        self.identity = identity or pod_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.api = api or client.CoordinationV1Api(load_kube_config())
        self._clock = clock
        self._monotonic = monotonic
        self._renewed_at: float | None = None  # monotonic time of the last success

    @property
    def is_leader(self) -> bool:
        """Whether this replica renewed the Lease within the renew deadline."""
        return (
            self._renewed_at is not None
            and self._monotonic() - self._renewed_at < self.renew_deadline
        )

    def _spec(self, now: float, acquire_time: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            # Whole seconds, as the field is an integer; rounding up never shortens it.
            "leaseDurationSeconds": max(1, int(-(-self.lease_duration // 1))),
            "acquireTime": acquire_time,
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One election round: acquire or renew the Lease; True while this replica leads."""
        now = self._clock()
        started = self._monotonic()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return self._create(now, started)
            return self._failed(error)
        except Exception as error:  # network errors: the API server may be back next round
            return self._failed(error)
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        if holder == self.identity:
            acquire_time = micro_time(timestamp(spec.acquire_time) or now)
            body_spec = self._spec(now, acquire_time, spec.lease_transitions or 0)
        else:
            renewed = timestamp(spec.renew_time) or timestamp(spec.acquire_time) or 0.0
            duration = spec.lease_duration_seconds or self.lease_duration
            if holder and renewed + duration >= now:
                self._renewed_at = None
                return False  # another live holder
            transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
            body_spec = self._spec(now, micro_time(now), transitions)
        body = self._replacement(lease, body_spec)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as error:
            if error.status in (404, 409):
                self._renewed_at = None
                return False  # someone else wrote it first
            return self._failed(error)
        except Exception as error:
            return self._failed(error)
        if holder != self.identity:
            logger.info("leader election: %s acquired Lease %s", self.identity, self.name)
        self._renewed_at = started
        return True

    def _replacement(self, lease: Any, spec: Any) -> dict[str, Any]:
        """A PUT body for the Lease with `spec`, preconditioned on the version read."""
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
                "labels": lease.metadata.labels,
                "annotations": lease.metadata.annotations,
            },
            "spec": spec,
        }

    def _create(self, now: float, started: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "labels": dict(MANAGED_BY)},
            "spec": self._spec(now, micro_time(now), 0),
        }
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                self._renewed_at = None
                return False  # another contender created it first
            return self._failed(error)
        except Exception as error:
            return self._failed(error)
        logger.info("leader election: %s created Lease %s", self.identity, self.name)
        self._renewed_at = started
        return True

    def _failed(self, error: Exception) -> bool:
        """An API error that says nothing about who leads: keep leading until the deadline."""
        logger.warning("leader election: Lease %s unreachable: %s", self.name, error)
        return self.is_leader

    def release(self) -> None:
        """Give the Lease up (on shutdown), so another replica leads at once rather than
        after the lease duration. Does nothing unless this replica holds it."""
        was_leader = self._renewed_at is not None
        self._renewed_at = None
        if not was_leader:
            return
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except Exception as error:
            logger.warning("leader election: cannot release Lease %s: %s", self.name, error)
            return
        spec = lease.spec or client.V1LeaseSpec()
        if spec.holder_identity != self.identity:
            return
        # client-go's release: no holder, so the next contender takes it at once.
        released = {
            "holderIdentity": None,
            "leaseDurationSeconds": spec.lease_duration_seconds,
            "acquireTime": None,
            "renewTime": micro_time(self._clock()),
            "leaseTransitions": spec.lease_transitions or 0,
        }
        body = self._replacement(lease, released)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except Exception as error:  # a conflict means someone else holds it now: fine
            logger.warning("leader election: release of Lease %s failed: %s", self.name, error)
            return
        logger.info("leader election: %s released Lease %s", self.identity, self.name)
