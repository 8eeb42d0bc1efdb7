"""The record of prediction ids already scored, so each is counted at most once.

`RedisFeedbackStore` is the shared record every replica sees: one key per scored id,
`gateway:feedback:scored:<signature>`, written with SET NX and the feedback max age as
its TTL (an id older than that is refused before the store is asked, so the key can go).
`LocalFeedbackStore` is the fallback of one process, bounded in size; the settings decide
which one runs (see Settings.feedback_store_kind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from gateway.config import Settings
from gateway.errors import FeedbackStoreUnavailableError

logger = logging.getLogger("gateway")

KEY_PREFIX = "gateway:feedback:scored:"
UNAVAILABLE_MESSAGE = (
    "feedback cannot be recorded right now: the shared record of scored predictions is "
    "unavailable; nothing was counted, so send the same feedback again later"
)


class FeedbackStore(Protocol):
    """Marks prediction ids as scored."""

    kind: str

    async def mark_scored(self, keys: Sequence[str], ttl_seconds: int) -> list[bool]:
        """Mark every key; True where it was new, False where it was scored before.

        All or nothing: on failure no key is marked (FeedbackStoreUnavailableError).
        """
        ...

    async def reachable(self) -> bool:
        """Whether the store answers now (for /readyz)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalFeedbackStore:
    """Scored ids in this process only, at most `max_ids` of them (oldest forgotten first)."""

    kind = "local"

    def __init__(self, max_ids: int, clock=time.monotonic) -> None:
        self.max_ids = max_ids
        self._clock = clock
        # key -> expiry; insertion order is expiry order, since every TTL is the same.
        self._expiries: OrderedDict[str, float] = OrderedDict()

    async def mark_scored(self, keys: Sequence[str], ttl_seconds: int) -> list[bool]:
        now = self._clock()
        while self._expiries and next(iter(self._expiries.values())) <= now:
            self._expiries.popitem(last=False)
        fresh = []
        for key in keys:
            is_new = key not in self._expiries
            if is_new:
                self._expiries[key] = now + ttl_seconds
                if len(self._expiries) > self.max_ids:
                    self._expiries.popitem(last=False)
            fresh.append(is_new)
        return fresh

    async def reachable(self) -> bool:
        return True

    async def close(self) -> None:
        self._expiries.clear()


class RedisFeedbackStore:
    """Scored ids in Redis, shared by every replica: SET NX with a TTL, in one MULTI."""

    kind = "redis"

    def __init__(self, url: str, timeout_seconds: float) -> None:
        # Imported here so that a process that never uses Redis never imports it.
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._timeout = timeout_seconds
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # One retry replaces a connection Redis closed (a restart) without making a
            # client wait through several timeouts when Redis is really down.
            retry=Retry(NoBackoff(), 1),
        )

    async def mark_scored(self, keys: Sequence[str], ttl_seconds: int) -> list[bool]:
        from redis.exceptions import RedisError

        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.set(KEY_PREFIX + key, b"1", nx=True, ex=ttl_seconds)
                results = await pipe.execute()
        except (RedisError, OSError) as error:
            # Redis's errors name its address: the log keeps it, the client never sees it.
            logger.warning("feedback store unavailable: %s", error)
            raise FeedbackStoreUnavailableError(UNAVAILABLE_MESSAGE) from None
        return [bool(result) for result in results]

    async def reachable(self) -> bool:
        from redis.exceptions import RedisError

        try:
            # The socket timeouts do not cover name resolution; this bounds it too.
            async with asyncio.timeout(2 * self._timeout):
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self._client.aclose()


def create_feedback_store(settings: Settings) -> FeedbackStore:
    """The store the settings choose; the local fallback says so in the log."""
    if settings.feedback_store_kind == "redis":
        assert settings.redis_url is not None
        return RedisFeedbackStore(
            settings.redis_url.get_secret_value(), settings.redis_timeout_seconds
        )
    logger.warning(
        "feedback deduplication is local to this process (%s): a prediction id can be "
        "scored once per replica; set GATEWAY_REDIS_URL to share the record",
        "GATEWAY_FEEDBACK_DEDUP=local"
        if settings.feedback_dedup == "local"
        else "no GATEWAY_REDIS_URL",
    )
    return LocalFeedbackStore(settings.feedback_local_max_ids)
