"""The rollout record (docs/ROLLOUT.md) in-process: parsing, the reader's refreshes over a
fake Redis, and what routing and shadow traffic make of a record."""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np
import orjson
import pytest

from gateway.metrics import GatewayMetrics, MetricLabels
from gateway.rollout_record import (
    RolloutRecord,
    RolloutRecordError,
    RolloutRecordReader,
    create_rollout_reader,
    parse_record,
)
from gateway.routing import VersionRouter
from gateway.shadow import ShadowCopy, ShadowRunner
from gateway.upstream import VersionSelector
from tests.gateway.conftest import inprocess_settings
from tests.gateway.fakes import FakeUpstream

RECORD = {
    "model": "mnist",
    "stable": 3,
    "candidate": 4,
    "stage": "canary",
    "canary_percent": 25.0,
    "shadow_percent": 0.0,
    "updated": 1733400000.0,
}


def record(**changes: object) -> RolloutRecord:
    return parse_record("mnist", orjson.dumps({**RECORD, **changes}))


class FakeRedis:
    """MGET over a dict of key -> bytes; `down` makes every call fail as Redis does."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False
        self.calls = 0

    def put(self, model: str = "mnist", **changes: object) -> None:
        self.values[f"rollout:{model}"] = orjson.dumps({**RECORD, "model": model, **changes})

    async def mget(self, keys):
        self.calls += 1
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return [self.values.get(key) for key in keys]

    async def aclose(self) -> None:
        pass


class Records:
    """A fixed set of records, as the router and the shadow runner read them."""

    def __init__(self, **records: RolloutRecord) -> None:
        self.records = records

    def get(self, model: str) -> RolloutRecord | None:
        return self.records.get(model)


def reader_over(redis: FakeRedis, models=("mnist",)) -> tuple[RolloutRecordReader, GatewayMetrics]:
    metrics = GatewayMetrics(labels=MetricLabels(models, ()))
    return RolloutRecordReader(redis, models, 1.0, 0.5, metrics), metrics


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_valid_record_is_parsed() -> None:
    parsed = record()
    assert (parsed.stable, parsed.candidate, parsed.stage) == (3, 4, "canary")
    assert parsed.canary_fraction == 0.25 and parsed.shadow_fraction == 0.0
    # Fields a later controller adds are ignored; a null stable is allowed.
    extended = orjson.dumps({**RECORD, "stable": None, "note": "x"})
    assert parse_record("mnist", extended).stable is None
    # No candidate: no share for it, whatever the percentages say.
    assert record(candidate=None, canary_percent=50, shadow_percent=50).canary_fraction == 0.0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        orjson.dumps({**RECORD, "model": "other"}),
        orjson.dumps({**RECORD, "stable": "3"}),
        orjson.dumps({**RECORD, "candidate": True}),
        orjson.dumps({**RECORD, "stable": 0}),
        orjson.dumps({**RECORD, "candidate": 4.5}),
        orjson.dumps({**RECORD, "canary_percent": 101}),
        orjson.dumps({**RECORD, "shadow_percent": -1}),
        orjson.dumps({**RECORD, "stage": "launched"}),
        orjson.dumps({k: v for k, v in RECORD.items() if k != "candidate"}),
        b'{"model": "mnist", "stable": 3, "candidate": 4, "stage": "canary", '
        b'"canary_percent": NaN, "shadow_percent": 0, "updated": 1}',
    ],
)
def test_a_malformed_record_is_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(RolloutRecordError) as error:
        parse_record("mnist", raw)
    assert str(error.value)


def test_the_reader_follows_records_and_ignores_malformed_ones(caplog) -> None:
    redis = FakeRedis()
    reader, metrics = reader_over(redis, ("mnist", "fashion"))

    async def scenario() -> None:
        await reader.refresh()
        assert reader.get("mnist") is None  # no record: the environment settings route
        assert sample(metrics, "gateway_rollout_canary_percent", model="mnist") is None

        redis.put(canary_percent=25)
        redis.put("fashion", stable=None, candidate=1, canary_percent=100)
        await reader.refresh()
        assert reader.get("mnist") == record(canary_percent=25)
        assert reader.get("fashion").candidate == 1
        assert sample(metrics, "gateway_rollout_canary_percent", model="mnist") == 25
        assert redis.calls == 2  # one MGET per refresh, whatever the number of models

        # A malformed write is ignored: the last valid record stays, logged once.
        redis.values["rollout:mnist"] = b'{"model": "mnist", "stable": "three"}'
        with caplog.at_level(logging.WARNING, logger="gateway"):
            for _ in range(3):
                await reader.refresh()
        assert reader.get("mnist") == record(canary_percent=25)
        assert sample(metrics, "gateway_rollout_refresh_errors_total", reason="malformed") == 3
        assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1

        redis.put(canary_percent=0)
        await reader.refresh()
        assert reader.get("mnist").canary_percent == 0

        del redis.values["rollout:mnist"]  # deleted: back to the environment settings
        await reader.refresh()
        assert reader.get("mnist") is None and reader.get("fashion") is not None
        assert sample(metrics, "gateway_rollout_canary_percent", model="mnist") is None

    asyncio.run(scenario())


def test_redis_down_keeps_the_last_records_and_logs_once_per_outage(caplog) -> None:
    redis = FakeRedis()
    redis.put(canary_percent=50)
    clock = [100.0]
    reader, metrics = reader_over(redis)
    reader._clock = lambda: clock[0]

    async def scenario() -> None:
        await reader.refresh()
        redis.down = True
        with caplog.at_level(logging.WARNING, logger="gateway"):
            for _ in range(5):
                clock[0] += 1.0
                await reader.refresh()
            assert reader.get("mnist") == record(canary_percent=50)
            failures = sample(metrics, "gateway_rollout_refresh_errors_total", reason="unavailable")
            assert failures == 5
            assert sample(metrics, "gateway_rollout_record_age_seconds", model="mnist") == 5.0
            redis.down = False
            clock[0] += 1.0
            await reader.refresh()
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "unavailable" in m]) == 1, messages
        assert len([m for m in messages if "answers again" in m]) == 1, messages
        assert sample(metrics, "gateway_rollout_record_age_seconds", model="mnist") == 0.0

    asyncio.run(scenario())


def test_the_background_task_refreshes_until_closed() -> None:
    redis = FakeRedis()
    reader, _ = reader_over(redis)
    reader.refresh_seconds = 0.01

    async def scenario() -> None:
        await reader.start()
        assert reader.get("mnist") is None
        redis.put(canary_percent=5)
        for _ in range(200):
            if reader.get("mnist") is not None:
                break
            await asyncio.sleep(0.01)
        assert reader.get("mnist").canary_percent == 5
        await reader.close()
        calls = redis.calls
        await asyncio.sleep(0.05)
        assert redis.calls == calls

    asyncio.run(scenario())


def canary_share(router: VersionRouter, model: str = "mnist", n: int = 4000) -> tuple[float, set]:
    picks = [router.select(None, None, model) for _ in range(n)]
    share = sum(by_canary for _, by_canary in picks) / n
    return share, {selector for selector, _ in picks}


def test_the_router_follows_the_record_by_version_number() -> None:
    records = Records(mnist=record(canary_percent=25))
    router = VersionRouter(50, "canary", "stable", rng=random.Random(7), rollout=records)
    share, selectors = canary_share(router)
    assert 0.22 < share < 0.28, share  # 4000 draws: the standard deviation is 0.7%
    assert selectors == {VersionSelector(version=4), VersionSelector(version=3)}
    picks = [router.select(None, None, "mnist") for _ in range(200)]
    assert all((s.version == 4) == by_canary for s, by_canary in picks)

    # Pins are untouched by the record.
    assert router.select(7, None, "mnist") == (VersionSelector(version=7), False)
    assert router.select(None, "canary", "mnist") == (VersionSelector(label="canary"), False)
    # A model without a record: the environment's split, by labels.
    share, selectors = canary_share(router, "fashion")
    assert 0.47 < share < 0.53, share
    assert selectors == {VersionSelector(label="canary"), VersionSelector(label="stable")}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"canary_percent": 0}, {VersionSelector(version=3)}),
        ({"canary_percent": 100}, {VersionSelector(version=4)}),
        ({"candidate": None, "canary_percent": 0}, {VersionSelector(version=3)}),
        # No stable version yet: the server's latest for the rest (docs/ROLLOUT.md).
        ({"stable": None, "canary_percent": 0}, {VersionSelector()}),
    ],
)
def test_the_router_honours_the_edges(changes, expected) -> None:
    router = VersionRouter(
        30, "canary", "stable", rng=random.Random(3), rollout=Records(mnist=record(**changes))
    )
    _, selectors = canary_share(router, n=1000)
    assert selectors == expected


def test_a_missing_candidate_falls_back_to_the_records_stable() -> None:
    router = VersionRouter(0, "canary", "stable", rollout=Records(mnist=record()))
    assert router.fallback("mnist") == VersionSelector(version=3)
    assert router.fallback("fashion") == VersionSelector(label="stable")


def shadow_runner(upstream: FakeUpstream, records: Records, label: str = "", percent=0.0):
    metrics = GatewayMetrics(labels=MetricLabels(["mnist"], ["canary"]))
    runner = ShadowRunner(
        upstream, metrics, label, percent, 1.0, 64, None, None, random.Random(5), records
    )
    return runner, metrics


async def offer_many(runner: ShadowRunner, served_version: int, n: int) -> None:
    batch = np.zeros((1, 28, 28), dtype=np.float32)
    for index in range(n):
        runner.offer(ShadowCopy("mnist", served_version, batch, [0], [f"k{index}"], ["id"]))
        await asyncio.sleep(0)  # let the shadow call run, so the bound is never hit
    while runner.in_flight:
        await asyncio.sleep(0)


def test_the_record_sends_its_shadow_share_to_the_candidate_whatever_the_env_says() -> None:
    upstream = FakeUpstream(versions=(3, 4), labels={"canary": 3})
    records = Records(mnist=record(canary_percent=0, shadow_percent=30))
    runner, metrics = shadow_runner(upstream, records, label="canary", percent=100)

    async def scenario() -> None:
        await offer_many(runner, 3, 1000)
        # Answers the candidate served itself are not copied to it.
        await offer_many(runner, 4, 100)

    asyncio.run(scenario())
    shadows = [selector for selector, shadow in upstream.predict_calls if shadow]
    assert set(shadows) == {VersionSelector(version=4)}
    assert 0.25 < len(shadows) / 1000 < 0.35, len(shadows)
    counted = sample(
        metrics, "gateway_shadow_requests_total", model="mnist", version="4", outcome="agree"
    )
    assert counted == len(shadows)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # A record without shadow share turns the environment's shadow off for its model.
        (Records(mnist=record(shadow_percent=0)), set()),
        # No record: the environment's shadow, by label.
        (Records(), {VersionSelector(label="canary")}),
    ],
)
def test_without_a_record_shadow_is_the_environments(records, expected) -> None:
    upstream = FakeUpstream(versions=(3, 4), labels={"canary": 4})
    runner, _ = shadow_runner(upstream, records, label="canary", percent=100)
    assert runner.may_copy("mnist") == bool(expected)
    asyncio.run(offer_many(runner, 3, 20))
    assert {selector for selector, shadow in upstream.predict_calls if shadow} == expected


def test_the_reader_runs_only_with_redis_and_not_when_turned_off() -> None:
    metrics = GatewayMetrics()
    url = "redis://127.0.0.1:1/0"  # never connected: the client connects on first use
    assert create_rollout_reader(inprocess_settings(), metrics) is None
    off = inprocess_settings(redis_url=url, rollout_enabled=False)
    assert create_rollout_reader(off, metrics) is None
    reader = create_rollout_reader(
        inprocess_settings(redis_url=url, models="mnist,fashion"), metrics
    )
    assert reader is not None and reader.models == ["mnist", "fashion"]
    assert reader.refresh_seconds == 1.0
    asyncio.run(reader.close())
