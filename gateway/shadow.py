"""Shadow traffic: the same preprocessed tensor, sent to a candidate version after the
client has its answer, to judge the candidate on real traffic before anyone sees it.

`GATEWAY_SHADOW_LABEL` names the candidate (a TF Serving version label such as
`canary`), `GATEWAY_SHADOW_PERCENT` the share of predictions copied to it. A model's
rollout record (gateway/rollout_record.py) overrides both for that model: its
`shadow_percent` of predictions go to version `candidate`, by number, except those the
candidate answered itself (a copy to the same version would only inflate agreement). The
client never waits for a shadow call and never sees its result or its failure:

- a shadow call runs as its own task after the response is built, with its own deadline
  (`GATEWAY_SHADOW_TIMEOUT_SECONDS`);
- at most `GATEWAY_SHADOW_MAX_CONCURRENCY` run at once; beyond that the copy is dropped
  and counted, never queued;
- each instance counts once in `gateway_shadow_requests_total{outcome}`: `agree` or
  `disagree` with the served class, `error`, or `dropped`. The shadow's class is
  remembered by prediction id, so feedback can score it in `gateway_shadow_feedback_total`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.metrics import GatewayMetrics
from gateway.prediction_memory import PredictionMemory
from gateway.routing import RolloutRecords
from gateway.upstream import Upstream, VersionSelector

logger = logging.getLogger("gateway")


@dataclass(frozen=True)
class ShadowCopy:
    """One answered request, as the shadow needs it."""

    model: str
    served_version: int
    batch: np.ndarray
    served_classes: list[int]
    keys: list[str]
    prediction_ids: list[str]


class ShadowRunner:
    """Sends shadow copies with bounded concurrency; records what they answer."""

    def __init__(
        self,
        upstream: Upstream,
        metrics: GatewayMetrics,
        label: str,
        percent: float,
        timeout_seconds: float,
        max_concurrency: int,
        memory: PredictionMemory | None,
        log_record: Callable[[dict[str, Any]], None] | None,
        rng: random.Random | None = None,
        rollout: RolloutRecords | None = None,
    ) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.label = label
        # The environment's shadow, for models without a rollout record; off without a label.
        self.fraction = percent / 100.0 if label else 0.0
        self._env_selector = VersionSelector(label=label or None)
        self.rollout = rollout
        self.timeout = timeout_seconds
        self.max_concurrency = max_concurrency
        self.memory = memory
        self.log_record = log_record
        self._random = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def may_copy(self, model: str) -> bool:
        """Whether answers of `model` may be copied at all: the caller skips building a
        ShadowCopy per request when no record and no setting asks for shadow traffic."""
        record = self.rollout.get(model) if self.rollout is not None else None
        if record is not None:
            return record.shadow_fraction > 0
        return self.fraction > 0

    def offer(self, copy: ShadowCopy) -> None:
        """Maybe start a shadow call for `copy`; returns at once."""
        target = self._target(copy)
        if target is None:
            return
        selector, fraction = target
        if fraction < 1.0 and self._random.random() >= fraction:
            return
        if len(self._tasks) >= self.max_concurrency:
            self._count(copy.model, self._asked(copy.model, selector), "dropped", len(copy.keys))
            return
        task = asyncio.create_task(self._run(copy, selector))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _target(self, copy: ShadowCopy) -> tuple[VersionSelector, float] | None:
        """Where a copy of this answer would go and with what probability; None: nowhere."""
        record = self.rollout.get(copy.model) if self.rollout is not None else None
        if record is not None:
            if record.shadow_fraction <= 0 or record.candidate == copy.served_version:
                return None
            return VersionSelector(version=record.candidate), record.shadow_fraction
        if self.fraction <= 0:
            return None
        return self._env_selector, self.fraction

    def _asked(self, model: str, selector: VersionSelector) -> str:
        """The version label of a copy nothing answered: the record's candidate (a number
        the controller chose, so a bounded set), else the label as today."""
        if selector.version is not None:
            return str(selector.version)
        return self.metrics.labels.asked_version(model, None, selector.label)

    def _count(self, model: str, version: str, outcome: str, amount: int) -> None:
        model_label = self.metrics.labels.model(model)
        self.metrics.shadow_requests.labels(model_label, version, outcome).inc(amount)

    async def _run(self, copy: ShadowCopy, selector: VersionSelector) -> None:
        labels = self.metrics.labels
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.upstream.predict(
                    copy.model, selector, copy.batch, self.timeout, shadow=True
                )
        except Exception as error:
            version = self._asked(copy.model, selector)
            self.metrics.shadow_duration.labels(labels.model(copy.model), version).observe(
                time.perf_counter() - started
            )
            self._count(copy.model, version, "error", len(copy.keys))
            logger.debug("shadow call to %s failed: %r", selector.describe(), error)
            return
        elapsed = time.perf_counter() - started
        version = labels.served_version(copy.model, result.version)
        model_label = labels.model(copy.model)
        self.metrics.shadow_duration.labels(model_label, version).observe(elapsed)
        shadow_classes = result.probabilities.argmax(axis=1).tolist()
        agree = sum(a == b for a, b in zip(shadow_classes, copy.served_classes, strict=True))
        self._count(copy.model, version, "agree", agree)
        self._count(copy.model, version, "disagree", len(shadow_classes) - agree)
        now = time.time()
        for index, key in enumerate(copy.keys):
            shadow_class = shadow_classes[index]
            if self.memory is not None:
                value = orjson.dumps({"v": result.version, "c": shadow_class})
                self.memory.remember(key, "shadow", value)
            if self.log_record is not None:
                self.log_record(
                    {
                        "type": "shadow",
                        "time": now,
                        "prediction_id": copy.prediction_ids[index],
                        "model": copy.model,
                        "version": result.version,
                        # null when a rollout record named the version by number
                        "label": selector.label,
                        "class": shadow_class,
                        "probabilities": result.probabilities[index].tolist(),
                        "served_version": copy.served_version,
                        "served_class": copy.served_classes[index],
                        "latency_ms": round(elapsed * 1000, 3),
                    }
                )

    async def close(self) -> None:
        """Cancel shadow calls still running (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
