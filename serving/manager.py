"""Model lifecycle: which versions of which models are served, and in what state.

Polls each model's base path for numeric version directories, applies the version policy
(latest N, all, specific), loads a new version before unloading the one it replaces (so
no request fails during a rollover), keeps a version that fails to load out of service
(state END with its error), and resolves version labels. Knows nothing of gRPC or HTTP.

Unloading a version takes it out of the lookup tables first, so no new request can reach
it; then waits for the requests that hold it (`Servable.drain`); then hands it to the
`on_unload` hook, which frees it (batch queues, runners, Session). Nothing keeps a
reference to an unloaded version, so its memory comes back.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from serving.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnknownError,
)
from serving.servable import Servable

log = logging.getLogger(__name__)
# While an unload waits for in-flight requests, it says so this often.
DRAIN_LOG_SECONDS = 10.0


class VersionState(enum.IntEnum):
    """tensorflow.serving.ModelVersionStatus.State, with the same numbers."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclasses.dataclass
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: VersionState
    error: ServingError | None = None
    fingerprint: tuple = ()


@dataclasses.dataclass
class _Model:
    config: model_server_config_pb2.ModelConfig
    statuses: dict[int, VersionStatus] = dataclasses.field(default_factory=dict)
    labels: dict[str, int] = dataclasses.field(default_factory=dict)


Loader = Callable[[str, int, Path], Servable]
UnloadHook = Callable[[Servable], None]


def list_version_dirs(base_path: Path) -> dict[int, Path] | None:
    """Numeric subdirectories of a base path; None when the base path itself is missing.

    Names that are not non-negative integers (temporary export dirs, `.tmp-3`) are skipped,
    as TF Serving's file-system source does.
    """
    try:
        entries = list(os.scandir(base_path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    versions = {}
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            versions[int(entry.name)] = Path(entry.path)
    return versions


def directory_fingerprint(path: Path) -> tuple:
    """(relative path, size, mtime) of every file: changes when a version dir is rewritten."""
    items = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(items))


def select_versions(
    policy: model_server_config_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy,
    candidates: set[int],
) -> set[int]:
    """The versions a policy wants among `candidates` (default policy: the latest one)."""
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return set(candidates)
    if which == "specific":
        return candidates & set(policy.specific.versions)
    count = policy.latest.num_versions if which == "latest" else 1
    return set(sorted(candidates)[-max(count, 1) :])


class ModelManager:
    """Owns the served versions. Mutations run on one thread; lookups are lock-free reads."""

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        loader: Loader,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
        on_change: Callable[[], None] | None = None,
        on_unload: UnloadHook | None = None,
    ) -> None:
        self._loader = loader
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._on_change = on_change or (lambda: None)
        self._on_unload = on_unload or Servable.close
        self._generations = itertools.count(1)
        self._lock = threading.RLock()  # serialises poll / reload
        self._models: dict[str, _Model] = {}
        # name -> {version: Servable}; replaced wholesale, never mutated, so readers on the
        # event loop need no lock.
        self._serving: dict[str, dict[int, Servable]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._set_models(config)

    # -- lookups (event loop) ------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Configured model names."""
        return list(self._models)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a ModelSpec, with TF Serving's NOT_FOUND / INVALID_ARGUMENT forms."""
        versions = self._serving.get(name)
        if label:
            version = self.version_for_label(name, label)
        if version is not None:
            servable = versions.get(version) if versions else None
            if servable is None:
                raise NotFoundError(f"Servable not found for request: Specific({name}, {version})")
            return servable
        if not versions:
            raise NotFoundError(f"Servable not found for request: Latest({name})")
        return versions[max(versions)]

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """`resolve`, and count the request in on the servable (release it when done).

        A version that began unloading between the lookup and the count is gone from the
        tables already, so the second lookup finds what serves now (or NOT_FOUND).
        """
        for _ in range(3):
            servable = self.resolve(name, version, label)
            if servable.acquire():
                return servable
        raise NotFoundError(f"Servable not found for request: Specific({name}, {version})")

    def version_for_label(self, name: str, label: str) -> int:
        """The version a label names; INVALID_ARGUMENT for a label the model does not have."""
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise InvalidArgumentError(f"Unrecognized servable version label: {label}")
        return version

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version statuses of a model, newest first (one version when `version` is given)."""
        # No lock: the event loop calls this, and the poll thread holds the lock while an
        # unload waits for requests the event loop must finish. Entries are replaced, never
        # mutated, and copying a dict is atomic under the GIL.
        model = self._models.get(name)
        statuses = dict(model.statuses) if model else {}
        if version is not None:
            status = statuses.get(version)
            if status is None:
                raise NotFoundError(f"Could not find version {version} of model {name}")
            return [dataclasses.replace(status)]
        if not statuses:
            raise NotFoundError(f"Could not find any versions of model {name}")
        return [dataclasses.replace(statuses[v]) for v in sorted(statuses, reverse=True)]

    def available_versions(self, name: str) -> list[int]:
        """AVAILABLE versions of a model, ascending."""
        return sorted(self._serving.get(name, {}))

    def all_models_available(self) -> bool:
        """True when every configured model has at least one AVAILABLE version."""
        serving = self._serving
        return bool(self._models) and all(serving.get(name) for name in self._models)

    def labels(self, name: str) -> dict[str, int]:
        """The label map of a model."""
        return dict(self._labels.get(name, {}))

    # -- mutations (poll thread) ---------------------------------------------------------

    def _set_models(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        wanted = {m.name: m for m in config.model_config_list.config}
        for name in list(self._models):
            if name not in wanted:
                self._unload_all(name)
                del self._models[name]
        for name, model_config in wanted.items():
            model = self._models.get(name)
            if model is None:
                self._models[name] = _Model(config=model_config)
            else:
                model.config = model_config

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply a new ModelServerConfig: add/remove models, load per policy, then labels.

        Like TF Serving, the model list is applied even when the labels are then refused
        (FAILED_PRECONDITION), in which case the previous labels stay.
        """
        with self._lock:
            self._set_models(config)
            self.poll()
            self.apply_labels()

    def apply_labels(self) -> None:
        """Install each model's version_labels; refuse labels naming unavailable versions."""
        with self._lock:
            new_labels: dict[str, dict[str, int]] = {}
            for name, model in self._models.items():
                labels = dict(model.config.version_labels)
                available = set(self._serving.get(name, {}))
                old = self._labels.get(name, {})
                for label, version in labels.items():
                    if version in available:
                        continue
                    is_new_label = label not in old
                    if self._allow_unavailable_labels and is_new_label:
                        continue
                    if old.get(label) == version:
                        continue
                    raise FailedPreconditionError(
                        f"Request to assign label to version {version} of model {name}, which "
                        "is not currently available for inference"
                    )
                new_labels[name] = labels
            self._labels = new_labels
            self._on_change()

    def poll(self) -> None:
        """One pass over every base path: load wanted versions, then unload the rest."""
        with self._lock:
            for name in list(self._models):
                try:
                    self._poll_model(name)
                except Exception:  # one model's fault must not stop the others' updates
                    log.exception("polling model %s failed", name)
            self._on_change()

    def _poll_model(self, name: str) -> None:
        model = self._models[name]
        base_path = Path(model.config.base_path)
        on_disk = list_version_dirs(base_path)
        if on_disk is None:
            log.warning("base path %s of model %s does not exist", base_path, name)
            return
        statuses = model.statuses
        # A failed version is retried only once its directory changes (e.g. a copy finished).
        for version, status in list(statuses.items()):
            if status.error is None:
                continue
            if (
                version not in on_disk
                or directory_fingerprint(on_disk[version]) != status.fingerprint
            ):
                del statuses[version]
        policy = model.config.model_version_policy
        # Loading can fail, which changes the candidates: iterate until nothing new is wanted.
        for _ in range(len(on_disk) + 1):
            failed = {v for v, s in statuses.items() if s.error is not None}
            wanted = select_versions(policy, set(on_disk) - failed)
            to_load = [v for v in sorted(wanted) if v not in self._serving.get(name, {})]
            if not to_load:
                break
            for version in to_load:
                self._load(name, version, on_disk[version])
        serving = self._serving.get(name, {})
        failed = {v for v, s in statuses.items() if s.error is not None}
        wanted = select_versions(policy, set(on_disk) - failed)
        for version in sorted(serving):
            if version not in wanted:
                self._unload(name, version)

    def _load(self, name: str, version: int, path: Path) -> None:
        model = self._models[name]
        model.statuses[version] = VersionStatus(version, VersionState.LOADING)
        log.info("loading %s version %d from %s", name, version, path)
        try:
            servable = self._loader(name, version, path)
        except ServingError as error:
            self._record_failure(name, version, path, error)
            return
        except Exception as error:  # a loader bug must not kill the poll loop
            self._record_failure(name, version, path, UnknownError(str(error)))
            return
        servable.generation = next(self._generations)
        serving = dict(self._serving)
        serving[name] = {**serving.get(name, {}), version: servable}
        self._serving = serving
        model.statuses[version] = VersionStatus(version, VersionState.AVAILABLE)
        self._on_change()

    def _record_failure(self, name: str, version: int, path: Path, error: ServingError) -> None:
        log.error("failed to load %s version %d: %s", name, version, error.message)
        self._models[name].statuses[version] = VersionStatus(
            version, VersionState.END, error, directory_fingerprint(path)
        )

    def _unload(self, name: str, version: int) -> None:
        model = self._models.get(name)
        if model is not None:
            model.statuses[version] = VersionStatus(version, VersionState.UNLOADING)
        serving = dict(self._serving)
        servable = serving.get(name, {}).get(version)
        serving[name] = {v: s for v, s in serving.get(name, {}).items() if v != version}
        # New requests no longer see the version; those already holding it finish with it.
        self._serving = serving
        self._on_change()
        if servable is not None:
            while not servable.drain(timeout=DRAIN_LOG_SECONDS):
                log.info(
                    "unloading %s version %d: waiting for %d requests in flight",
                    name,
                    version,
                    servable.inflight,
                )
            try:
                self._on_unload(servable)
            except Exception:  # freeing must not stop the poll loop
                log.exception("freeing %s version %d failed", name, version)
        if model is not None:
            model.statuses[version] = VersionStatus(version, VersionState.END)
        log.info("unloaded %s version %d", name, version)

    def unload_all(self) -> None:
        """Unload every version of every model (waits for their requests): a clean stop."""
        with self._lock:
            for name in list(self._serving):
                self._unload_all(name)

    def _unload_all(self, name: str) -> None:
        for version in sorted(self._serving.get(name, {})):
            self._unload(name, version)
        serving = dict(self._serving)
        serving.pop(name, None)
        self._serving = serving
        labels = dict(self._labels)
        labels.pop(name, None)
        self._labels = labels
