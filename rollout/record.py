"""The rollout record each gateway replica reads from Redis (docs/ROLLOUT.md).

Key `rollout:<model>`, a JSON string: which version is stable, which is the candidate,
and the shares of traffic the gateways send it as canary and as shadow. The controller
rewrites it on every tick (idempotent), so a Redis that restarted empty is refilled
within one interval.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from rollout.errors import RolloutError

KEY_PREFIX = "rollout:"


class RecordStoreUnavailableError(RolloutError):
    """Redis did not answer: the gateways keep their last record; the controller retries
    next tick and never advances a stage whose traffic share it could not publish."""


@dataclass(frozen=True)
class RolloutRecord:
    """What the gateways need to route one model's traffic."""

    model: str
    stable: int | None
    candidate: int | None
    stage: str
    canary_percent: float = 0.0
    shadow_percent: float = 0.0

    def as_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "stable": self.stable,
                "candidate": self.candidate,
                "stage": self.stage,
                "canary_percent": self.canary_percent,
                "shadow_percent": self.shadow_percent,
                "updated": time.time(),
            }
        )


class RecordStore:
    """Reads and writes rollout records in Redis."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )

    def publish(self, record: RolloutRecord) -> None:
        """Write `record` (no expiry: the gateways must never lose it to a TTL)."""
        try:
            self._redis.set(KEY_PREFIX + record.model, record.as_json())
        except redis.RedisError as error:
            raise RecordStoreUnavailableError(f"cannot write the rollout record: {error}") from None

    def mark_rolled_back(self, model: str, version: int) -> None:
        """Remember that `version` was rolled back (a set per model, no expiry)."""
        try:
            self._redis.sadd(f"{KEY_PREFIX}{model}:rolled_back", version)
        except redis.RedisError as error:
            raise RecordStoreUnavailableError(f"cannot mark the rollback: {error}") from None

    def rolled_back(self, model: str) -> set[int]:
        """Every version of `model` marked rolled back."""
        try:
            members = self._redis.smembers(f"{KEY_PREFIX}{model}:rolled_back")
        except redis.RedisError as error:
            raise RecordStoreUnavailableError(f"cannot read the rollbacks: {error}") from None
        return {int(member) for member in members}

    def close(self) -> None:
        self._redis.close()
