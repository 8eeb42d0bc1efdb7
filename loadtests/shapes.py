"""Load shapes as plain arithmetic: how many users should run `elapsed` seconds into a run.

The Locust `LoadTestShape` in the locustfile only reads its options and calls `target_users`;
keeping the arithmetic here lets it be tested without importing Locust.

- `steady`: `users` from the start (ramped at `spawn_rate`) until `run_time`.
- `step`: start at `step_users` and add `step_users` every `step_seconds`, up to `users`.
- `spike`: hold `spike_base_users`, jump to `users` at `spike_at_seconds` for `spike_seconds`
  (spawned within about a second, as a real spike arrives), then fall back to the base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ShapeKind = Literal["steady", "step", "spike"]
SHAPE_KINDS: tuple[ShapeKind, ...] = ("steady", "step", "spike")


@dataclass(frozen=True)
class ShapeParams:
    """Parameters of a load shape. `users` is the peak; `run_time` (seconds) bounds the run."""

    kind: ShapeKind = "steady"
    users: int = 10
    spawn_rate: float = 5.0
    run_time: float | None = None
    step_users: int = 2
    step_seconds: float = 10.0
    spike_base_users: int = 2
    spike_at_seconds: float = 10.0
    spike_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            choices = ", ".join(SHAPE_KINDS)
            raise ValueError(f"unknown load shape {self.kind!r}; use one of {choices}")
        positive = {
            "users": self.users,
            "spawn_rate": self.spawn_rate,
            "step_users": self.step_users,
            "step_seconds": self.step_seconds,
            "spike_seconds": self.spike_seconds,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"load shape {name} must be positive, got {value}")
        if self.run_time is not None and self.run_time <= 0:
            raise ValueError(f"run time must be positive, got {self.run_time}")
        if self.spike_at_seconds < 0:
            raise ValueError(f"spike start must not be negative, got {self.spike_at_seconds}")
        if not 0 < self.spike_base_users <= self.users:
            raise ValueError(
                f"spike base users must be between 1 and the peak users ({self.users}), "
                f"got {self.spike_base_users}"
            )

    @property
    def natural_end(self) -> float | None:
        """When the shape ends on its own if no run time is given (None: never)."""
        if self.kind == "step":
            steps = math.ceil(self.users / self.step_users)
            # Hold the top step as long as every other step before stopping.
            return steps * self.step_seconds
        if self.kind == "spike":
            # Recover for as long as the run lasted before the spike.
            return 2 * self.spike_at_seconds + self.spike_seconds
        return None


def target_users(params: ShapeParams, elapsed: float) -> tuple[int, float] | None:
    """Return (users, spawn rate) for `elapsed` seconds into the run, or None when it is over."""
    end = params.run_time if params.run_time is not None else params.natural_end
    if end is not None and elapsed >= end:
        return None
    if params.kind == "steady":
        return params.users, params.spawn_rate
    if params.kind == "step":
        level = params.step_users * (1 + int(elapsed // params.step_seconds))
        return min(level, params.users), params.spawn_rate
    in_spike = params.spike_at_seconds <= elapsed < params.spike_at_seconds + params.spike_seconds
    if in_spike:
        return params.users, max(params.spawn_rate, float(params.users))
    return params.spike_base_users, max(params.spawn_rate, float(params.users))


def describe(params: ShapeParams) -> str:
    """One line saying what the shape will do, for the run's log."""
    bound = f"{params.run_time:g}s" if params.run_time is not None else "its natural end"
    if params.kind == "steady":
        plan = f"{params.users} users (spawn {params.spawn_rate:g}/s)"
    elif params.kind == "step":
        plan = f"+{params.step_users} users every {params.step_seconds:g}s up to {params.users}"
    else:
        plan = (
            f"{params.spike_base_users} users, spike to {params.users} at "
            f"{params.spike_at_seconds:g}s for {params.spike_seconds:g}s"
        )
    return f"load shape {params.kind}: {plan}, until {bound}"
