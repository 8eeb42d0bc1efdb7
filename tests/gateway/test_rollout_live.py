"""The rollout record through a real Redis: the gateway app (in-process, over FakeUpstream,
which answers with the version each call asked for) follows what a controller writes to
`rollout:mnist` within the contract's 2 s (docs/ROLLOUT.md), at the default refresh.

FakeUpstream serves versions 1, 2 and 3, with the label `stable` on 1: the environment
settings send un-pinned traffic to 1, the records to 2 (stable) and 3 (candidate).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import orjson
import pytest
import redis

from tests.gateway.fakes import FakeUpstream
from tests.gateway.test_feedback_replicas import counter
from tests.gateway.test_rollout_record import RECORD

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/mnist/predict"
ONE = {"instances": [np.full((28, 28), 0.2).tolist()]}
KEY = "rollout:mnist"
CONTRACT_SECONDS = 2.0
# How long a test polls before it fails; the contract is checked on the measured time.
POLL_SECONDS = 6.0
SETTINGS = {"default_label": "stable", "canary_percent": 0}


def predict(client) -> int:
    response = client.post(PREDICT, json=ONE)
    assert response.status_code == 200, response.text
    return response.json()["version"]


def follow(client, accept: Callable[[list[int]], bool], window: int, what: str) -> float:
    """Send un-pinned requests until the versions of the last `window` satisfy `accept`;
    return the seconds from the call to the first request of that window."""
    started = time.monotonic()
    seen: deque[tuple[float, int]] = deque(maxlen=window)
    while time.monotonic() - started < POLL_SECONDS:
        seen.append((time.monotonic(), predict(client)))
        if len(seen) == window and accept([version for _, version in seen]):
            return seen[0][0] - started
    raise AssertionError(f"{what}: not seen in {POLL_SECONDS} s; last {list(seen)[-10:]}")


def write(store: redis.Redis, **changes: object) -> None:
    store.set(KEY, orjson.dumps({**RECORD, "stable": 2, "candidate": 3, **changes}))


def shadow_calls(upstream: FakeUpstream) -> list[int | None]:
    """The version number each shadow call asked for, in order."""
    return [selector.version for selector, shadow in upstream.predict_calls if shadow]


def metrics_text(client) -> str:
    return client.get("/metrics").text


def test_records_move_traffic_and_shadow_and_deleting_one_restores_the_env(
    start_redis, inprocess
) -> None:
    server = start_redis()
    store = redis.Redis.from_url(server.url)
    upstream = FakeUpstream(versions=(1, 2, 3), labels={"stable": 1})
    client = inprocess(upstream, redis_url=server.url, **SETTINGS)
    assert {predict(client) for _ in range(20)} == {1}  # no record: the environment's split

    write(store, canary_percent=25)
    took = follow(client, lambda v: v[-1] in (2, 3), 1, "traffic on the record's versions")
    assert took <= CONTRACT_SECONDS, took
    versions = [predict(client) for _ in range(400)]
    assert set(versions) == {2, 3}
    # 25% of 400: the standard deviation is 2.2 points.
    assert 0.17 < versions.count(3) / 400 < 0.33, versions.count(3)

    write(store, canary_percent=0)
    took = follow(client, lambda v: set(v) == {2}, 60, "no candidate traffic")
    assert took <= CONTRACT_SECONDS, took
    assert {predict(client) for _ in range(100)} == {2}

    write(store, canary_percent=0, shadow_percent=100)
    took = follow(
        client, lambda v: 3 in shadow_calls(upstream), 1, "shadow copies to the candidate"
    )
    assert took <= CONTRACT_SECONDS, took
    assert set(shadow_calls(upstream)) == {3}
    # The controller judges the candidate by these: agreement, then accuracy once labelled.
    response = client.post(PREDICT, json=ONE).json()
    prediction_id = response["predictions"][0]["prediction_id"]
    memory_key = "gateway:prediction:" + prediction_id.rpartition(".")[2]
    deadline = time.monotonic() + POLL_SECONDS
    while not store.hexists(memory_key, "shadow"):
        assert time.monotonic() < deadline, "the shadow's answer was never remembered"
        time.sleep(0.05)
    feedback = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": 4})
    assert feedback.status_code == 200, feedback.text
    text = metrics_text(client)
    assert counter(text, "gateway_shadow_requests_total", version="3", outcome="agree") >= 1
    assert counter(text, "gateway_shadow_feedback_total", version="3") == 1
    assert counter(text, "gateway_shadow_requests_total", version="2") == 0
    assert counter(text, "gateway_rollout_shadow_percent", model="mnist") == 100

    store.delete(KEY)
    took = follow(client, lambda v: set(v) == {1}, 60, "the environment's routing again")
    assert took <= CONTRACT_SECONDS, took
    copies = len(shadow_calls(upstream))
    assert {predict(client) for _ in range(50)} == {1}
    assert len(shadow_calls(upstream)) == copies  # and the environment's shadow is off
    assert "gateway_rollout_canary_percent{" not in metrics_text(client)


def test_without_redis_the_last_record_stays_and_the_gateway_keeps_serving(
    start_redis, inprocess, caplog
) -> None:
    server = start_redis()
    store = redis.Redis.from_url(server.url)
    client = inprocess(
        FakeUpstream(versions=(1, 2, 3), labels={"stable": 1}), redis_url=server.url, **SETTINGS
    )
    write(store, canary_percent=100)
    follow(client, lambda v: set(v) == {3}, 20, "all traffic on the candidate")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        server.process.stop()

        def failed_refreshes() -> float:
            text = metrics_text(client)
            return counter(text, "gateway_rollout_refresh_errors_total", reason="unavailable")

        # Every answer meanwhile is a 200 from the candidate (predict() checks the status).
        follow(client, lambda v: set(v) == {3} and failed_refreshes() >= 3, 1, "3 failures")
        assert {predict(client) for _ in range(50)} == {3}
    outages = [r for r in caplog.records if "rollout records: Redis unavailable" in r.getMessage()]
    assert len(outages) == 1, [r.getMessage() for r in caplog.records]
