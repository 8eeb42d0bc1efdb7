"""Canary split, `kill -9` of the model server, and SIGTERM of the model server, under load.

One model server for the module (conftest's `scenario_servers`), started from a
models.config that serves versions 1 (label `stable`) and 2 (label `canary`) of a private
repository copy. The kill test restarts it
on the same ports; the SIGTERM test stops it for good, so it runs last.
"""

from __future__ import annotations

import math
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import ManagedProcess
from tests.fixtures.serving import health_status
from tests.reliability.stack import (
    MODEL,
    PREDICT_PATH,
    predict_body,
    write_report,
)
from tests.reliability.traffic import Traffic, summarize

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CANARY_PERCENT = 20
CANARY_REQUESTS = 600
CANARY_SIGMAS = 4  # tolerance on the observed share, in binomial standard deviations
DEADLINE_SECONDS = 2.0  # the fault gateways' GATEWAY_REQUEST_TIMEOUT_SECONDS
DEADLINE_SLACK_SECONDS = 1.5  # scheduling on a shared 2-core machine
RECOVERY_LIMIT_SECONDS = 5.0
RESTART_TIMEOUT = 120.0
MODEL_SERVER_GRACE_SECONDS = 30.0  # serving/server.py SHUTDOWN_GRACE_SECONDS


class RestartableServer:
    """The module's model server; `restart()` starts the same command on the same ports."""

    def __init__(self, server, log_dir: Path) -> None:
        self.server = server
        self.log_dir = log_dir
        self.restarts = 0

    @property
    def process(self) -> ManagedProcess:
        return self.server.process

    @property
    def grpc_target(self) -> str:
        return self.server.grpc_target

    def restart(self) -> None:
        """Start the same command again (same ports) and wait until health is SERVING."""
        self.restarts += 1
        old = self.server.process
        process = ManagedProcess(
            old.args, self.log_dir / f"restart-{self.restarts}.log", env=old.env
        ).start()
        self.server.process = process
        process.wait_ready(lambda: health_status(self.grpc_target) == "SERVING", RESTART_TIMEOUT)


@pytest.fixture(scope="module")
def labelled_server(scenario_servers):
    """The model server serving mnist 1 (stable) and 2 (canary) from a models.config."""
    handle = RestartableServer(scenario_servers.labelled, scenario_servers.log_dir)
    yield handle
    handle.process.stop()


def traffic_through_deadline_gateway(
    labelled_server: RestartableServer, start_gateway, body: bytes, **traffic: float
) -> tuple[object, Traffic]:
    """A gateway with the fault tests' deadline in front of the (re)started model server,
    and unstarted traffic to its predict route."""
    if not labelled_server.process.alive():
        labelled_server.restart()
    gateway = start_gateway(labelled_server.grpc_target, request_timeout_seconds=DEADLINE_SECONDS)
    return gateway, Traffic(
        gateway.url, PREDICT_PATH, body, timeout=DEADLINE_SECONDS + 10, **traffic
    )


def clean_failure(outcome) -> bool:
    """A 200, a 504 at the deadline, or a 503 that says when to retry."""
    return outcome.ok or outcome.status == 504 or (outcome.status == 503 and outcome.retry_after)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", line)
        if not match:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(pairs.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_canary_share_matches_the_setting_and_metrics_keep_versions_apart(
    labelled_server, start_gateway, digits
) -> None:
    gateway = start_gateway(labelled_server.grpc_target, canary_percent=CANARY_PERCENT)
    traffic = Traffic(
        gateway.url,
        PREDICT_PATH,
        predict_body(digits),
        rate=60,
        max_requests=CANARY_REQUESTS,
        max_seconds=90,
    )
    outcomes = traffic.start().join()

    n = len(outcomes)
    canary = sum(o.version == 2 for o in outcomes)
    expected = CANARY_PERCENT / 100
    tolerance = CANARY_SIGMAS * math.sqrt(expected * (1 - expected) / n)
    share = canary / n
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    by_version = {
        v: metric_sum(metrics, "gateway_predictions_total", model=MODEL, version=v)
        for v in ("1", "2")
    }
    write_report(
        "canary",
        {
            **summarize(outcomes),
            "canary_percent": CANARY_PERCENT,
            "observed_share": round(share, 4),
            "tolerance": round(tolerance, 4),
            "metrics_predictions_by_version": by_version,
            "unexpected": sum(not o.ok for o in outcomes),
        },
    )
    assert n == CANARY_REQUESTS and all(o.ok for o in outcomes), summarize(outcomes)
    assert {o.version for o in outcomes} == {1, 2}
    assert abs(share - expected) <= tolerance, f"canary share {share:.3f}, want {expected}"
    # One instance per request: the per-version counters equal what the clients saw.
    assert by_version == {"1": float(n - canary), "2": float(canary)}
    upstream_ok = {
        v: metric_sum(
            metrics, "gateway_upstream_duration_seconds_count", model=MODEL, version=v, code="OK"
        )
        for v in ("1", "2")
    }
    assert upstream_ok == by_version


def test_kill_9_gives_503_with_retry_after_then_recovers_within_5s_of_restart(
    labelled_server, start_gateway, digits
) -> None:
    gateway, traffic = traffic_through_deadline_gateway(
        labelled_server,
        start_gateway,
        predict_body(digits),
        rate=10,
        max_requests=3000,
        max_seconds=RESTART_TIMEOUT + 60,
    )
    with traffic:
        traffic.wait_for(lambda seen: sum(o.ok for o in seen) >= 20, timeout=30)
        labelled_server.process.signal(signal.SIGKILL)
        killed = time.monotonic()
        labelled_server.process.process.wait(10)
        traffic.wait_for(
            lambda seen: sum(o.started > killed and o.status == 503 for o in seen) >= 5, timeout=30
        )
        ready = httpx.get(f"{gateway.url}/readyz", timeout=DEADLINE_SECONDS + 5)
        labelled_server.restart()
        restarted = time.monotonic()
        recovered = traffic.wait_for(
            lambda seen: any(o.ok and o.finished > restarted for o in seen), timeout=30
        )
        # A few more seconds to show the recovery holds.
        traffic.wait_for(
            lambda seen: sum(o.ok and o.started > recovered for o in seen) >= 30, timeout=30
        )
    outcomes = traffic.join()

    down = [o for o in outcomes if not o.ok]
    recovery = recovered - restarted
    write_report(
        "upstream_kill",
        {
            **summarize(outcomes),
            "downtime_seconds": round(restarted - killed, 2),
            "recovery_seconds": round(recovery, 2),
            "readyz_while_down": ready.status_code,
            "unexpected": sum(not clean_failure(o) for o in outcomes),
        },
    )
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert down, "the kill did not reach the traffic"
    assert {o.status for o in down} <= {503, 504}, summarize(outcomes)["statuses"]
    assert all(o.retry_after for o in down if o.status == 503)
    slowest = max(o.latency for o in outcomes)
    assert slowest <= DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS, f"a request took {slowest:.1f}s"
    assert recovery <= RECOVERY_LIMIT_SECONDS, f"recovered {recovery:.1f}s after restart"
    # Once one request got through, the ones after it do too.
    after = [o for o in outcomes if o.started > recovered]
    assert len(after) >= 30 and all(o.ok for o in after)


def test_a_frozen_model_server_gives_504_at_the_deadline_then_recovers(
    labelled_server, start_gateway, digits
) -> None:
    # SIGSTOP: the server's sockets stay open but nothing answers, the worst upstream.
    gateway, traffic = traffic_through_deadline_gateway(
        labelled_server,
        start_gateway,
        predict_body(digits),
        rate=10,
        concurrency=32,
        max_requests=1000,
        max_seconds=60,
    )
    with traffic:
        traffic.wait_for(lambda seen: sum(o.ok for o in seen) >= 10, timeout=30)
        labelled_server.process.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            traffic.wait_for(
                lambda seen: sum(o.started > frozen and o.status == 504 for o in seen) >= 5,
                timeout=30,
            )
            ready = httpx.get(f"{gateway.url}/readyz", timeout=DEADLINE_SECONDS + 5)
        finally:
            labelled_server.process.signal(signal.SIGCONT)
        thawed = time.monotonic()
        recovered = traffic.wait_for(
            lambda seen: any(o.ok and o.started > thawed for o in seen), timeout=30
        )
        traffic.wait_for(lambda seen: sum(o.ok and o.started > recovered for o in seen) >= 10, 30)
    outcomes = traffic.join()

    recovery = recovered - thawed
    timed_out = [o for o in outcomes if o.status == 504]
    write_report(
        "upstream_frozen",
        {
            **summarize(outcomes),
            "frozen_seconds": round(thawed - frozen, 2),
            "recovery_seconds": round(recovery, 2),
            "readyz_while_frozen": ready.status_code,
            "unexpected": sum(not clean_failure(o) for o in outcomes),
        },
    )
    assert ready.status_code == 503
    assert timed_out and all(o.error_code == "upstream_timeout" for o in timed_out)
    assert {o.status for o in outcomes} <= {200, 503, 504}, summarize(outcomes)["statuses"]
    slowest = max(o.latency for o in outcomes)
    assert slowest <= DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS, f"a request took {slowest:.1f}s"
    assert recovery <= RECOVERY_LIMIT_SECONDS, f"recovered {recovery:.1f}s after SIGCONT"


def test_sigterm_to_the_model_server_drains_in_flight_requests(
    labelled_server, start_gateway, digits
) -> None:
    gateway, traffic = traffic_through_deadline_gateway(
        labelled_server,
        start_gateway,
        predict_body(digits, count=64),
        rate=400,  # above what the stack answers, so the 8 slots stay busy
        concurrency=8,
        max_requests=2000,
        max_seconds=60,
    )
    with traffic:
        # Signal only while requests are in flight: at a paced rate a fast machine can
        # answer everything between two sends, and the test would then prove nothing.
        traffic.wait_for(
            lambda seen: sum(o.ok for o in seen) >= 40 and traffic.in_flight >= 4, timeout=30
        )
        labelled_server.process.signal(signal.SIGTERM)
        signalled = time.monotonic()
        exit_code = labelled_server.process.process.wait(30)
        exited = time.monotonic()
        traffic.wait_for(lambda seen: any(o.started > exited for o in seen), timeout=10)
    outcomes = traffic.join()

    in_flight = [o for o in outcomes if o.started < signalled < o.finished]
    after = [o for o in outcomes if o.started > exited]
    # How the gateway's Predict calls ended, by gRPC code. Refused after the signal:
    # UNAVAILABLE. Arrived but not yet handed to a handler when the server shut down:
    # CANCELLED, from gRPC core itself (grpc/grpc#41785), never run. A server-side failure
    # would be INTERNAL or UNKNOWN. A call cut off by the grace period running out would
    # also be CANCELLED, so the drain must end well inside the grace period.
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    codes = {
        match: metric_sum(metrics, "gateway_upstream_duration_seconds_count", code=match)
        for match in set(
            re.findall(r'gateway_upstream_duration_seconds_count\{[^}]*code="(\w+)"', metrics)
        )
    }
    write_report(
        "sigterm_model_server",
        {
            **summarize(outcomes),
            "in_flight_at_signal": len(in_flight),
            "in_flight_ok": sum(o.ok for o in in_flight),
            "drain_seconds": round(exited - signalled, 2),
            "exit_code": exit_code,
            "upstream_calls_by_code": codes,
            "unexpected": sum(not (o.ok or (o.status == 503 and o.retry_after)) for o in outcomes),
        },
    )
    assert exit_code == 0, labelled_server.process.log_tail()
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
    assert exited - signalled < MODEL_SERVER_GRACE_SECONDS / 2, "the drain ran into the grace"
    assert in_flight, "no request was in flight when the signal landed"
    # In flight at the model server: answered. Not yet sent upstream: a clean 503.
    assert all(o.ok or (o.status == 503 and o.retry_after) for o in in_flight), [
        (o.status, o.transport_error) for o in in_flight if not o.ok
    ]
    assert all(o.status == 503 and o.retry_after for o in after)
    assert all(o.status in (200, 503) for o in outcomes), summarize(outcomes)["statuses"]
