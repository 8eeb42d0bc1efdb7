"""The rollout record: how the rollout controller (`python -m rollout`) steers every replica.

The controller writes one JSON record per model to Redis, key `rollout:{model}`
(docs/ROLLOUT.md):

    {"model": "mnist", "stable": 3, "candidate": 4, "stage": "canary",
     "canary_percent": 25.0, "shadow_percent": 0.0, "updated": 1733400000.0}

`RolloutRecordReader` reads the records of the gateway's models with one MGET every
`GATEWAY_ROLLOUT_REFRESH_SECONDS` in a background task, and keeps the latest valid one per
model in a dict that the request path reads without awaiting anything (`get`). What it
does when things go wrong, so that a controller's mistake or Redis' absence never fails a
client:

- no record for a model (never written, or deleted): `get` is None and the gateway routes
  by its environment settings, as it does without Redis;
- a malformed record: logged (once per distinct value), counted, and ignored: the last
  valid record of that model stays in force (none: the environment settings);
- Redis unreachable: every record read last stays in force; the outage is logged once
  when it starts and once when it ends, and each failed refresh is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import Settings
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("gateway")

KEY_PREFIX = "rollout:"
# Version numbers are TF Serving's int64; strict, so true or "3" is refused, not coerced.
Version = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


class RolloutRecord(BaseModel):
    """One model's record, validated. Fields the controller may add later are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    stable: Version | None
    candidate: Version | None
    stage: Literal["seen", "shadow", "canary", "stable", "rolled_back", "paused"]
    canary_percent: Percent
    shadow_percent: Percent
    updated: float = Field(allow_inf_nan=False)

    @property
    def canary_fraction(self) -> float:
        """The share of un-pinned traffic the candidate gets, 0-1 (0 without a candidate)."""
        return self.canary_percent / 100.0 if self.candidate is not None else 0.0

    @property
    def shadow_fraction(self) -> float:
        """The share of answered predictions copied to the candidate, 0-1 (0 without one)."""
        return self.shadow_percent / 100.0 if self.candidate is not None else 0.0


class RolloutRecordError(ValueError):
    """A record that is not valid JSON of the documented shape (logged, never an HTTP error)."""


def parse_record(model: str, raw: bytes | str) -> RolloutRecord:
    """Validate the value of `rollout:{model}`; RolloutRecordError says what is wrong."""
    try:
        record = RolloutRecord.model_validate_json(raw)
    except ValidationError as error:
        # Only the first problem, without the input: a log line, not a dump of the value.
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        raise RolloutRecordError(f"{where}: {first['msg']}") from None
    if record.model != model:
        raise RolloutRecordError(f"model: the record names {record.model[:64]!r}")
    return record


class RecordSource(Protocol):
    """What the reader needs of a Redis client (redis.asyncio.Redis has it)."""

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def aclose(self) -> None: ...


class RolloutRecordReader:
    """Keeps the latest valid rollout record of each model, refreshed in the background.

    `get(model)` is what routing and shadow traffic call per request: a dict lookup.
    """

    def __init__(
        self,
        source: RecordSource,
        models: Sequence[str],
        refresh_seconds: float,
        timeout_seconds: float,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.models = list(models)
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout_seconds
        self.metrics = metrics
        self._clock = clock
        # Replaced whole, never mutated, so a request reading it mid-refresh sees one state.
        self._records: dict[str, RolloutRecord] = {}
        self._read_at: dict[str, float] = {}
        self._malformed: dict[str, bytes] = {}
        self._outage_since: float | None = None
        self._task: asyncio.Task | None = None

    def get(self, model: str) -> RolloutRecord | None:
        """The record in force for `model`, or None (route by the environment settings)."""
        return self._records.get(model)

    async def start(self) -> None:
        """Read once before serving (so a new replica follows the records from its first
        request, bounded by the timeout), then refresh in the background."""
        await self._refresh_safely()
        self._task = asyncio.create_task(self._run(), name="rollout-records")

    async def close(self) -> None:
        """Stop refreshing and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.source.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self._refresh_safely()

    async def _refresh_safely(self) -> None:
        try:
            await self.refresh()
        except Exception:  # neither start-up nor the loop may die of a surprise
            logger.exception("rollout records: refresh failed unexpectedly")

    async def refresh(self) -> None:
        """One MGET of every model's record; apply what is valid, keep the rest."""
        keys = [KEY_PREFIX + model for model in self.models]
        now = self._clock()
        try:
            # The socket timeouts do not bound name resolution; this bounds the whole call.
            async with asyncio.timeout(2 * self.timeout):
                values = await self.source.mget(keys)
        except Exception as error:  # RedisError, OSError, TimeoutError: any failure to read
            self._fail(now, error)
            return
        if self._outage_since is not None:
            logger.warning(
                "rollout records: Redis answers again after %.1f s; following the records",
                now - self._outage_since,
            )
            self._outage_since = None
        records = dict(self._records)
        for model, raw in zip(self.models, values, strict=True):
            if raw is None:
                if records.pop(model, None) is not None:
                    logger.warning(
                        "rollout record of %s deleted: routing by the environment settings",
                        model,
                    )
                self._read_at.pop(model, None)
                self._malformed.pop(model, None)
                continue
            raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode()
            try:
                record = parse_record(model, raw_bytes)
            except RolloutRecordError as error:
                self.metrics.rollout_refresh_errors.labels("malformed").inc()
                if self._malformed.get(model) != raw_bytes:
                    self._malformed[model] = raw_bytes
                    logger.warning(
                        "rollout record of %s is malformed and ignored (%s); %s",
                        model,
                        error,
                        "keeping the last valid one"
                        if model in records
                        else "routing by the environment settings",
                    )
                continue
            self._malformed.pop(model, None)
            self._read_at[model] = now
            if records.get(model) != record:
                logger.info(
                    "rollout record of %s: stable %s, candidate %s, stage %s, canary %s%%, "
                    "shadow %s%%",
                    model,
                    record.stable,
                    record.candidate,
                    record.stage,
                    record.canary_percent,
                    record.shadow_percent,
                )
            records[model] = record
        self._records = records
        self._export(now)

    def _fail(self, now: float, error: BaseException) -> None:
        self.metrics.rollout_refresh_errors.labels("unavailable").inc()
        if self._outage_since is None:
            self._outage_since = now
            # Once per outage: a refresh a second would otherwise flood the log.
            logger.warning(
                "rollout records: Redis unavailable (%s); keeping the last %d record(s) read "
                "until it answers",
                error.__class__.__name__ if not str(error) else error,
                len(self._records),
            )
        self._export(now)

    def _export(self, now: float) -> None:
        """The shares in force and how old each record's last reading is."""
        metrics = self.metrics
        for model in self.models:
            label = metrics.labels.model(model)
            record = self._records.get(model)
            if record is None:
                # No record: the environment settings route; the series go away.
                for gauge in (
                    metrics.rollout_canary_percent,
                    metrics.rollout_shadow_percent,
                    metrics.rollout_record_age,
                ):
                    with contextlib.suppress(KeyError):  # never set: nothing to remove
                        gauge.remove(label)
                continue
            metrics.rollout_canary_percent.labels(label).set(record.canary_percent)
            metrics.rollout_shadow_percent.labels(label).set(record.shadow_percent)
            metrics.rollout_record_age.labels(label).set(now - self._read_at.get(model, now))


def create_rollout_reader(
    settings: Settings, metrics: GatewayMetrics
) -> RolloutRecordReader | None:
    """The reader the settings ask for: None without GATEWAY_REDIS_URL or with
    GATEWAY_ROLLOUT_ENABLED=false (routing is then the environment settings')."""
    if not settings.rollout_on:
        return None
    assert settings.redis_url is not None
    # Imported here so that a process that never uses Redis never imports it.
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    timeout = settings.redis_timeout_seconds
    client: Any = Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One retry replaces a connection Redis closed; the next refresh retries the rest.
        retry=Retry(NoBackoff(), 1),
    )
    return RolloutRecordReader(
        client, settings.model_names, settings.rollout_refresh_seconds, timeout, metrics
    )
