"""What the gateway remembers about each prediction for the feedback window.

- its 28x28 uint8 input, so that a labelled prediction's pixels reach the log whatever
  the sampling (`GATEWAY_LOG_SAMPLE` keeps only a share of the others);
- the shadow version's answer, so that feedback can score the shadow too.

`RedisPredictionMemory` is shared by every replica: a hash per prediction,
`gateway:prediction:<signature>` with fields `input` (784 bytes) and `shadow` (JSON
`{"v": version, "c": class}`), expiring after `GATEWAY_FEEDBACK_MAX_AGE`.
`LocalPredictionMemory` is the fallback of one process, bounded in size. Redis needs about
1 KB per prediction for the feedback window; GATEWAY_LOG_REDIS_URL can give it a Redis of
its own, so that evicting inputs never evicts the scored ids of feedback deduplication.

Writes never sit on the request path: `remember` appends to a buffer, and a background
task writes it every 100 ms (or once 256 wait) in one pipeline; a full buffer drops and
counts (`reason="memory_full"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.metrics import GatewayMetrics

logger = logging.getLogger("gateway")

KEY_PREFIX = "gateway:prediction:"
BATCH = 256
FLUSH_INTERVAL_SECONDS = 0.1
# Feedback waits at most this long for this process's queued writes before reading.
RECALL_WAIT_SECONDS = 1.0
# Without Redis: the inputs of the last 10,000 predictions (about 8 MB) of this process.
LOCAL_MAX_ITEMS = 10_000


@dataclass(frozen=True)
class Remembered:
    """What is known of one prediction: its input and the shadow's answer, if any."""

    input: bytes | None = None
    shadow: dict[str, Any] | None = None


class MemoryBackend(Protocol):
    """Stores fields of predictions by key, each expiring after `ttl` seconds."""

    async def write(self, items: Sequence[tuple[str, str, bytes]], ttl: int) -> None:
        """(key, field, value) triples; raises on failure."""
        ...

    async def read(self, keys: Sequence[str]) -> list[Remembered]:
        """One Remembered per key; raises on failure."""
        ...

    async def close(self) -> None: ...


class LocalPredictionMemory:
    """The last `max_items` predictions of this process."""

    def __init__(self, max_items: int, clock=time.monotonic) -> None:
        self.max_items = max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()

    async def write(self, items: Sequence[tuple[str, str, bytes]], ttl: int) -> None:
        now = self._clock()
        for key, field, value in items:
            _, fields = self._items.pop(key, (0.0, {}))
            fields[field] = value
            self._items[key] = (now + ttl, fields)
            if len(self._items) > self.max_items:
                self._items.popitem(last=False)

    async def read(self, keys: Sequence[str]) -> list[Remembered]:
        now = self._clock()
        found = []
        for key in keys:
            expiry, fields = self._items.get(key, (0.0, {}))
            found.append(_remembered(fields if expiry > now else {}))
        return found

    async def close(self) -> None:
        self._items.clear()


class RedisPredictionMemory:
    """A hash per prediction in Redis, with the feedback max age as its TTL."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )

    async def write(self, items: Sequence[tuple[str, str, bytes]], ttl: int) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, field, value in items:
                pipe.hset(KEY_PREFIX + key, field, value)
                pipe.expire(KEY_PREFIX + key, ttl)
            await pipe.execute()

    async def read(self, keys: Sequence[str]) -> list[Remembered]:
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(KEY_PREFIX + key)
            results = await pipe.execute()
        return [
            _remembered({name.decode(): value for name, value in fields.items()})
            for fields in results
        ]

    async def close(self) -> None:
        await self._client.aclose()


def _remembered(fields: dict[str, bytes]) -> Remembered:
    shadow = fields.get("shadow")
    return Remembered(fields.get("input"), orjson.loads(shadow) if shadow else None)


class PredictionMemory:
    """Remembers in the background; recalls on feedback."""

    def __init__(
        self, backend: MemoryBackend, ttl_seconds: int, metrics: GatewayMetrics, queue_size: int
    ) -> None:
        self.backend = backend
        self.ttl = ttl_seconds
        self.queue_size = queue_size
        self._buffer: list[tuple[str, str, bytes]] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Writes buffered and written so far: recall waits for those buffered before it only.
        self._queued = 0
        self._written = 0
        self._progress = asyncio.Condition()
        self._full = metrics.log_dropped.labels("memory_full")
        self._errors = metrics.log_dropped.labels("memory_error")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="prediction-memory")

    def remember(self, key: str, field: str, value: bytes) -> None:
        """Buffer one field of one prediction; drop and count it if the buffer is full."""
        if len(self._buffer) >= self.queue_size:
            self._full.inc()
            return
        self._buffer.append((key, field, value))
        self._queued += 1
        if len(self._buffer) >= BATCH:
            self._kick.set()

    async def recall(self, keys: Sequence[str]) -> list[Remembered]:
        """What is remembered of each key; nothing (and a warning) if the store fails.

        Writes this process buffered before are finished first, so feedback sent right
        after its prediction finds the input.
        """
        target = self._queued
        self._kick.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECALL_WAIT_SECONDS), self._progress:
                await self._progress.wait_for(lambda: self._written >= target)
        try:
            return await self.backend.read(keys)
        except Exception as error:
            logger.warning("prediction memory unavailable: %s", error)
            return [Remembered() for _ in keys]

    async def _drain(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_SECONDS):
                    await self._kick.wait()
            self._kick.clear()
            await self._write_buffer()

    async def _write_buffer(self) -> None:
        items, self._buffer = self._buffer, []
        if not items:
            return
        try:
            for start in range(0, len(items), BATCH):
                await self.backend.write(items[start : start + BATCH], self.ttl)
        except Exception as error:
            self._errors.inc(len(items))
            logger.warning("prediction memory: %d writes lost: %s", len(items), error)
        async with self._progress:
            self._written += len(items)
            self._progress.notify_all()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write_buffer(), 2.0)
        await self.backend.close()


def create_prediction_memory(settings: Any, metrics: GatewayMetrics) -> PredictionMemory:
    """GATEWAY_LOG_REDIS_URL, else the feedback store's Redis, else this process's memory
    of the last LOCAL_MAX_ITEMS predictions."""
    ttl = int(settings.feedback_max_age.total_seconds())
    url = settings.log_redis_url or (
        settings.redis_url if settings.feedback_store_kind == "redis" else None
    )
    if url is not None:
        backend: MemoryBackend = RedisPredictionMemory(
            url.get_secret_value(), settings.redis_timeout_seconds
        )
    else:
        backend = LocalPredictionMemory(LOCAL_MAX_ITEMS)
    return PredictionMemory(backend, ttl, metrics, settings.log_queue_size)
