"""Version rollover and corrupt versions, under steady traffic through the gateway.

One model server (polling its base path every second) on a private copy of the trained
repository, and one gateway in front of it. The trainer publishes three new versions while
requests flow; then a truncated and a variable-less version are dropped in.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.repository import export_version
from tests.reliability.stack import (
    MODEL,
    PREDICT_PATH,
    Gateway,
    launch_gateway,
    model_status,
    predict_body,
    publish_corrupt,
    version_states,
    wait_ready,
    write_report,
)
from tests.reliability.traffic import Traffic, backward_steps, failures, summarize

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

NEW_VERSIONS = 3
RATE = 20.0  # requests per second, steady
STATUS_POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def rollover_stack(scenario_servers):
    """(repository, model server polling it every 1 s, gateway) for this module."""
    server = scenario_servers.rollover
    gateway = launch_gateway(scenario_servers.log_dir, server.grpc_target)
    try:
        wait_ready(gateway)
        yield scenario_servers.rollover_repository, server, gateway
    finally:
        gateway.process.stop()
        server.process.stop()  # done with it: free its memory for the rest of the session


class StatusWatcher:
    """Snapshots the gateway's status API while traffic flows: versions seen AVAILABLE."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.available: set[int] = set()
        self.errors: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for row in model_status(self.gateway)["versions"]:
                    if row["state"] == "AVAILABLE":
                        self.available.add(row["version"])
                    if row["error_message"]:
                        self.errors[row["version"]] = row["error_message"]
            except Exception:  # a missed snapshot is retried on the next tick
                pass
            self._stop.wait(STATUS_POLL_SECONDS)

    def __enter__(self) -> StatusWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_three_new_versions_roll_over_under_load_without_a_failed_request(
    rollover_stack, digits
) -> None:
    repository, _server, gateway = rollover_stack
    first = max(v for v, state in version_states(gateway).items() if state == "AVAILABLE")
    exported: list[int] = []
    traffic = Traffic(
        gateway.url,
        PREDICT_PATH,
        predict_body(digits),
        rate=RATE,
        max_requests=4000,
        max_seconds=150,
    )
    with StatusWatcher(gateway) as watcher, traffic:
        for _ in range(NEW_VERSIONS):
            version_dir = export_version(repository, epochs=1, batch_size=1024)
            exported.append(int(version_dir.name))
        last = exported[-1]
        # Keep the traffic flowing until the last version has answered a good share.
        traffic.wait_for(lambda seen: sum(o.version == last for o in seen) >= 40, timeout=60)
    outcomes = traffic.join()

    summary = summarize(outcomes)
    served = {o.version for o in outcomes if o.version is not None}
    steps = backward_steps(outcomes)
    write_report(
        "rollover",
        {
            **summary,
            "unexpected": summary["failures"] + len(steps),
            "exported_versions": exported,
            "available_seen": sorted(watcher.available),
        },
    )
    assert exported == [first + 1, first + 2, first + 3]
    assert not failures(outcomes), failures(outcomes)[:5]
    assert served == {first, *exported}, f"served {served}, expected every exported version"
    assert served <= watcher.available, f"served {served - watcher.available} not AVAILABLE"
    assert all((repository / MODEL / str(v) / "saved_model.pb").is_file() for v in served)
    assert not steps, [(o.index, o.version, newer) for o, newer in steps[:5]]


@pytest.mark.parametrize("fault", ["truncated", "no_variables"])
def test_a_corrupt_version_is_refused_while_the_previous_one_keeps_serving(
    rollover_stack, digits, fault: str
) -> None:
    repository, _server, gateway = rollover_stack
    states = version_states(gateway)
    good = max(v for v, state in states.items() if state == "AVAILABLE")
    corrupt = max(states) + 1
    traffic = Traffic(
        gateway.url,
        PREDICT_PATH,
        predict_body(digits),
        rate=RATE,
        max_requests=2000,
        max_seconds=60,
    )
    with StatusWatcher(gateway) as watcher, traffic:
        traffic.wait_for(lambda seen: len(seen) >= 10, timeout=20)
        publish_corrupt(repository / MODEL, good, corrupt, fault)
        started = time.monotonic()
        while corrupt not in watcher.errors and time.monotonic() - started < 30:
            time.sleep(0.1)
        refused_after = time.monotonic() - started
        # A few more seconds of traffic, over several polls of the repository.
        traffic.wait_for(lambda seen: len(seen) >= 10 + int(RATE * 3), timeout=30)
    outcomes = traffic.join()

    summary = summarize(outcomes)
    row = next(r for r in model_status(gateway)["versions"] if r["version"] == corrupt)
    write_report(
        f"corrupt_{fault}",
        {
            **summary,
            "unexpected": summary["failures"],
            "corrupt_version": corrupt,
            "status_error_after_seconds": round(refused_after, 2),
            "status_row": row,
        },
    )
    assert corrupt in watcher.errors, f"the status API never showed version {corrupt}'s error"
    assert row["state"] != "AVAILABLE" and row["error_code"] != 0 and row["error_message"]
    assert not failures(outcomes), failures(outcomes)[:5]
    assert {o.version for o in outcomes} == {good}
    assert version_states(gateway)[good] == "AVAILABLE"
