"""The controller's Prometheus metrics (names are part of the interface: docs/CONTRACTS.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

STAGES = ("seen", "shadow", "canary", "stable", "rolled_back", "paused")


class RolloutMetrics:
    """rollout_stage, rollout_decisions_total, rollout_traffic_percent, and the loop's health."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage = Gauge(
            "rollout_stage",
            "1 for the stage each version of a model is in (seen|shadow|canary|stable|"
            "rolled_back|paused), 0 for the others.",
            ["model", "version", "stage"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "rollout_decisions",
            "Decisions taken, by model and decision (bootstrap|seen|shadow|canary|promote|"
            "rollback|superseded|pause|resume|wait).",
            ["model", "decision"],
            registry=self.registry,
        )
        self.traffic = Gauge(
            "rollout_traffic_percent",
            "Share of a model's un-pinned traffic the rollout record sends each version, "
            "by role (canary|shadow).",
            ["model", "version", "role"],
            registry=self.registry,
        )
        self.tick_errors = Counter(
            "rollout_tick_errors",
            "Control-loop passes that could not finish, by model and reason "
            "(prometheus|serving|redis|config).",
            ["model", "reason"],
            registry=self.registry,
        )
        self.last_tick = Gauge(
            "rollout_last_tick_timestamp_seconds",
            "When the control loop last finished a pass (a stalled loop stops moving it).",
            registry=self.registry,
        )

    def set_stage(self, model: str, version: int, stage: str) -> None:
        """Mark `version` as being in `stage` (one stage at a time per version)."""
        key = str(version)
        for name in STAGES:
            self.stage.labels(model, key, name).set(1 if name == stage else 0)
