"""rollout/kube.py against the real `kubernetes` client over HTTP: the ConfigMap store
(create if missing, never overwrite a seeded config, a stale write fails clearly) and Lease
leader election (one leader of two, takeover after expiry, release).

No cluster can run here, so the client talks to a minimal in-process API server: GET,
POST and PUT of ConfigMaps and Leases in one namespace, with the API server's
optimistic concurrency (409 on a stale resourceVersion or an existing name).
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from rollout.kube import (
    ConfigMapConflictError,
    ConfigMapModelConfigStore,
    LeaseLeaderElector,
    ensure_model_config,
)

NAMESPACE = "mnist-serving"
SEED = "# seed\nmodel_config_list {}\n"
ROUTES = {
    "configmaps": re.compile(rf"^/api/v1/namespaces/{NAMESPACE}/configmaps(?:/([^/?]+))?"),
    "leases": re.compile(
        rf"^/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases(?:/([^/?]+))?"
    ),
}


class FakeApiServer(http.server.ThreadingHTTPServer):
    """Objects by (resource, name), each with a resourceVersion from one counter."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.versions = itertools.count(1)
        self.requests: list[tuple[str, str]] = []

    def store(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        obj["metadata"]["namespace"] = NAMESPACE
        self.objects[(resource, obj["metadata"]["name"])] = obj
        return obj


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """The API server's error body (a metav1.Status)."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class FakeApiHandler(http.server.BaseHTTPRequestHandler):
    server: FakeApiServer

    def route(self) -> tuple[str, str | None]:
        for resource, pattern in ROUTES.items():
            match = pattern.match(self.path)
            if match:
                return resource, match[1]
        raise LookupError(self.path)

    def answer(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def handle_one(self, method: str) -> None:
        try:
            resource, name = self.route()
        except LookupError:
            self.answer(404, status(404, "NotFound", f"no route {self.path}"))
            return
        self.server.requests.append((method, resource))
        with self.server.lock:
            current = self.server.objects.get((resource, name)) if name else None
            if method == "GET":
                if current is None:
                    self.answer(404, status(404, "NotFound", f'{resource} "{name}" not found'))
                else:
                    self.answer(200, current)
            elif method == "POST":
                obj = self.body()
                key = (resource, obj["metadata"]["name"])
                if key in self.server.objects:
                    self.answer(409, status(409, "AlreadyExists", f"{key} already exists"))
                else:
                    self.answer(201, self.server.store(resource, obj))
            elif method == "PUT":
                obj = self.body()
                if current is None:
                    self.answer(404, status(404, "NotFound", f'{resource} "{name}" not found'))
                elif (
                    obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]
                ):
                    message = "the object has been modified; please apply your changes"
                    self.answer(409, status(409, "Conflict", message))
                else:
                    self.answer(200, self.server.store(resource, obj))

    def do_GET(self) -> None:
        self.handle_one("GET")

    def do_POST(self) -> None:
        self.handle_one("POST")

    def do_PUT(self) -> None:
        self.handle_one("PUT")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def api_client(api_server: FakeApiServer) -> Iterator[client.ApiClient]:
    configuration = client.Configuration(host=f"http://127.0.0.1:{api_server.server_address[1]}")
    with client.ApiClient(configuration) as api:
        yield api


def store(api_client: client.ApiClient) -> ConfigMapModelConfigStore:
    return ConfigMapModelConfigStore(NAMESPACE, api=client.CoreV1Api(api_client))


class FakeClock:
    """Wall and monotonic time the test moves by hand, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def elector(api_client: client.ApiClient, identity: str, clock: FakeClock) -> LeaseLeaderElector:
    return LeaseLeaderElector(
        NAMESPACE,
        identity=identity,
        api=client.CoordinationV1Api(api_client),
        clock=clock,
        monotonic=clock,
    )


# --- the ConfigMap store ------------------------------------------------------------------------


def test_missing_configmap_reads_as_none_and_write_creates_it(
    api_client: client.ApiClient, api_server: FakeApiServer
) -> None:
    models = store(api_client)
    assert models.read_text() is None
    models.write_text("first")
    created = api_server.objects[("configmaps", "tf-serving-models")]
    assert created["data"] == {"models.config": "first"}
    assert created["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rollout-controller"
    # The controller's own next write needs no read: it replaces the version it wrote.
    models.write_text("second")
    assert store(api_client).read_text() == "second"
    assert [method for method, _ in api_server.requests] == ["GET", "POST", "PUT", "GET"]


def test_missing_key_reads_as_none_and_other_keys_survive_a_write(
    api_client: client.ApiClient, api_server: FakeApiServer
) -> None:
    api_server.store(
        "configmaps",
        {"metadata": {"name": "tf-serving-models", "annotations": {"note": "kept"}},
         "data": {"other": "kept"}},
    )  # fmt: skip
    models = store(api_client)
    assert models.read_text() is None
    models.write_text("config")
    written = api_server.objects[("configmaps", "tf-serving-models")]
    assert written["data"] == {"other": "kept", "models.config": "config"}
    assert written["metadata"]["annotations"] == {"note": "kept"}


def test_seeding_writes_only_when_there_is_no_config(
    api_client: client.ApiClient, api_server: FakeApiServer
) -> None:
    assert ensure_model_config(store(api_client), SEED) is True
    assert store(api_client).read_text() == SEED
    store(api_client).write_text("rollout state")
    # A restarted controller (or a second replica) seeds again: the config stays.
    assert ensure_model_config(store(api_client), SEED) is False
    assert store(api_client).read_text() == "rollout state"


def test_seeding_loses_gracefully_to_a_concurrent_creator(api_client: client.ApiClient) -> None:
    late, early = store(api_client), store(api_client)
    assert late.read_text() is None
    early.write_text("created first")

    class ReadThenRace:
        """`late`, whose read saw no ConfigMap: the other one is created before it writes."""

        read_text = staticmethod(lambda: None)
        write_text = staticmethod(late.write_text)

    assert ensure_model_config(ReadThenRace(), SEED) is False
    assert store(api_client).read_text() == "created first"


def test_a_write_from_a_stale_read_fails_clearly_and_loses_nothing(
    api_client: client.ApiClient,
) -> None:
    ensure_model_config(store(api_client), SEED)
    first, second = store(api_client), store(api_client)
    assert first.read_text() == second.read_text() == SEED
    first.write_text("first writer")
    with pytest.raises(ConfigMapConflictError, match="changed since resourceVersion"):
        second.write_text("second writer")
    assert store(api_client).read_text() == "first writer"
    # Reading again is the way out: the retry from a fresh read succeeds.
    assert second.read_text() == "first writer"
    second.write_text("second writer, rebased")
    assert store(api_client).read_text() == "second writer, rebased"


def test_create_after_a_stale_missing_read_fails_clearly(api_client: client.ApiClient) -> None:
    first, second = store(api_client), store(api_client)
    assert first.read_text() is None and second.read_text() is None
    first.write_text("created first")
    with pytest.raises(ConfigMapConflictError, match="created by someone else"):
        second.write_text("would overwrite")
    assert store(api_client).read_text() == "created first"


# --- Lease leader election ----------------------------------------------------------------------


def test_one_of_two_contenders_leads_and_renews(
    api_client: client.ApiClient, api_server: FakeApiServer
) -> None:
    clock = FakeClock()
    a, b = elector(api_client, "pod-a", clock), elector(api_client, "pod-b", clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    for _ in range(5):  # every retry period, well inside the lease duration
        clock.advance(2)
        assert a.try_acquire_or_renew() is True
        assert b.try_acquire_or_renew() is False
    assert a.is_leader and not b.is_leader
    spec = api_server.objects[("leases", "rollout-controller")]["spec"]
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    # The clock stands on a whole second: the API server still needs six digits.
    assert re.fullmatch(r"\S+T\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", spec["renewTime"])


def test_the_other_takes_over_only_after_the_lease_expires(api_client: client.ApiClient) -> None:
    clock = FakeClock()
    a, b = elector(api_client, "pod-a", clock), elector(api_client, "pod-b", clock)
    assert a.try_acquire_or_renew() is True
    clock.advance(14)  # pod-a stopped renewing; 14 s < 15 s: still its lease
    assert b.try_acquire_or_renew() is False
    # pod-a itself stops acting once its renew deadline (10 s) has passed without renewing,
    # before anyone else can take the lease.
    assert not a.is_leader
    clock.advance(2)  # renewTime + 15 s has passed
    assert b.try_acquire_or_renew() is True
    assert a.try_acquire_or_renew() is False, "pod-a must not take back a live lease"
    assert b.is_leader and not a.is_leader


def test_release_lets_the_other_in_at_once(
    api_client: client.ApiClient, api_server: FakeApiServer
) -> None:
    clock = FakeClock()
    a, b = elector(api_client, "pod-a", clock), elector(api_client, "pod-b", clock)
    assert a.try_acquire_or_renew() is True
    b.release()  # not the holder: changes nothing
    assert api_server.objects[("leases", "rollout-controller")]["spec"]["holderIdentity"] == "pod-a"
    a.release()
    assert not a.is_leader
    assert b.try_acquire_or_renew() is True
    assert api_server.objects[("leases", "rollout-controller")]["spec"]["leaseTransitions"] == 0


def test_simultaneous_takeover_has_one_winner(api_client: client.ApiClient) -> None:
    """Two contenders read the same expired lease; the resourceVersion lets one write."""
    clock = FakeClock()
    a, b, c = (elector(api_client, name, clock) for name in ("pod-a", "pod-b", "pod-c"))
    assert a.try_acquire_or_renew() is True
    clock.advance(20)
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}
    original = client.CoordinationV1Api.read_namespaced_lease

    def read_then_wait(api: client.CoordinationV1Api, *args: Any, **kwargs: Any) -> Any:
        lease = original(api, *args, **kwargs)
        barrier.wait(5)  # both have read the same resourceVersion before either writes
        return lease

    threads = []
    for contender in (b, c):
        contender.api.read_namespaced_lease = read_then_wait.__get__(contender.api)
        thread = threading.Thread(
            target=lambda e=contender: results.update({e.identity: e.try_acquire_or_renew()})
        )
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results.values()) == [False, True], results


def test_api_errors_keep_a_leader_only_until_its_renew_deadline(
    api_client: client.ApiClient,
) -> None:
    clock = FakeClock()
    a = elector(api_client, "pod-a", clock)
    assert a.try_acquire_or_renew() is True

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise client.exceptions.ApiException(status=503, reason="Service Unavailable")

    a.api.read_namespaced_lease = unreachable
    clock.advance(2)
    assert a.try_acquire_or_renew() is True, "one failed renewal inside the deadline"
    clock.advance(9)
    assert a.try_acquire_or_renew() is False, "past the renew deadline: stop acting"


def test_timings_must_leave_a_margin() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseLeaderElector(NAMESPACE, renew_deadline=15, api=object())
