"""Drift: live statistics binned by each version's reference, exported as counters.

Every version the trainer exports carries a no-input `reference_stats` signature (see
trainer/reference_stats.py): for each statistic, the cut points of its bins and the share
of the held-out data in each bin. The gateway asks for it the first time a version
answers, exports the shares as `gateway_drift_reference_ratio{model,version,statistic,bin}`
and counts live predictions per bin in `gateway_drift_observations_total`. PSI is not
computed here: counts add up across replicas, PSI does not, so the recording rules in
monitoring/ compute it.

The statistics (their definitions must equal the trainer's; tests/gateway/test_drift.py
checks it on the same images):
- `class`: the predicted class; `confidence`: the top-class probability;
- on the 28x28 input in [0, 1], with ink = pixels above 0.5: `ink_fraction`,
  `mean_intensity`, `bbox_size` (ink bounding box area / 784, 0 without ink), and
  `bbox_center_x`, `bbox_center_y` (in pixels, -1 without ink).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.metrics import GatewayMetrics

logger = logging.getLogger("gateway")

STATISTICS = (
    "class",
    "confidence",
    "ink_fraction",
    "mean_intensity",
    "bbox_size",
    "bbox_center_x",
    "bbox_center_y",
)
INK_THRESHOLD = 0.5
MAX_BINS = 16  # bounds the label values a model can make the gateway export
RETRY_SECONDS = 60.0  # a version without a reference (or a failed call) is asked again


def live_statistics(
    batch: np.ndarray, classes: np.ndarray, confidences: np.ndarray
) -> dict[str, np.ndarray]:
    """Each statistic's value per instance of a float [N, 28, 28] batch in [0, 1]."""
    ink = batch > INK_THRESHOLD
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    has_ink = rows.any(axis=1)
    side = batch.shape[1]
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom = side - 1 - rows[:, ::-1].argmax(axis=1)
    right = side - 1 - cols[:, ::-1].argmax(axis=1)
    size = (bottom - top + 1) * (right - left + 1) / float(side * side)
    return {
        "class": classes.astype(np.float64),
        "confidence": confidences.astype(np.float64),
        "ink_fraction": ink.mean(axis=(1, 2)),
        "mean_intensity": batch.mean(axis=(1, 2), dtype=np.float64),
        "bbox_size": np.where(has_ink, size, 0.0),
        "bbox_center_x": np.where(has_ink, (left + right) / 2.0, -1.0),
        "bbox_center_y": np.where(has_ink, (top + bottom) / 2.0, -1.0),
    }


@dataclass
class Reference:
    """A version's bins: cut points per statistic, and the counters of its bins."""

    cuts: dict[str, np.ndarray]
    counters: dict[str, list[Any]]


def parse_reference(outputs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{statistic: (cuts, proportions)} from the signature's `<stat>_cuts` and
    `<stat>_proportions` outputs; statistics the gateway does not know are ignored."""
    parsed = {}
    for statistic in STATISTICS:
        cuts = outputs.get(f"{statistic}_cuts")
        proportions = outputs.get(f"{statistic}_proportions")
        if cuts is None or proportions is None:
            continue
        cuts, proportions = np.ravel(cuts), np.ravel(proportions)
        if len(proportions) != len(cuts) + 1 or not 1 <= len(proportions) <= MAX_BINS:
            raise ValueError(f"{statistic}: {len(cuts)} cuts for {len(proportions)} bins")
        parsed[statistic] = (cuts.astype(np.float64), proportions.astype(np.float64))
    return parsed


class DriftMonitor:
    """Per (model, version): the reference, fetched once, and the live bin counters."""

    def __init__(self, upstream: Any, metrics: GatewayMetrics, signature_name: str) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.signature_name = signature_name
        self._references: dict[tuple[str, int], Reference] = {}
        self._asked: dict[tuple[str, int], float] = {}  # when the reference was last asked
        self._tasks: set[asyncio.Task] = set()

    def observe(
        self, model: str, version: int, batch: np.ndarray, classes: np.ndarray, confidences
    ) -> None:
        """Count one answered batch in its version's bins (ask for the reference first)."""
        key = (model, version)
        reference = self._references.get(key)
        if reference is None:
            self._ask(key)
            return
        values = live_statistics(batch, classes, confidences)
        for statistic, cuts in reference.cuts.items():
            bins = np.searchsorted(cuts, values[statistic], side="right")
            counts = np.bincount(bins, minlength=len(cuts) + 1)
            counters = reference.counters[statistic]
            for index in np.flatnonzero(counts).tolist():
                counters[index].inc(int(counts[index]))

    def _ask(self, key: tuple[str, int]) -> None:
        now = time.monotonic()
        if now - self._asked.get(key, -RETRY_SECONDS) < RETRY_SECONDS:
            return
        self._asked[key] = now
        task = asyncio.create_task(self._fetch(*key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, model: str, version: int) -> None:
        try:
            outputs = await self.upstream.reference_stats(model, version, self.signature_name)
            parsed = parse_reference(outputs)
        except Exception as error:
            logger.info(
                "no drift reference for %s version %d (%s signature): %s",
                model, version, self.signature_name, error,
            )  # fmt: skip
            return
        if not parsed:
            return
        model_label = self.metrics.labels.model(model)
        version_label = self.metrics.labels.served_version(model, version)
        counters = {}
        for statistic, (_, proportions) in parsed.items():
            counters[statistic] = []
            for index, share in enumerate(proportions.tolist()):
                bin_label = str(index)
                self.metrics.drift_reference.labels(
                    model_label, version_label, statistic, bin_label
                ).set(share)
                # Every bin exists from the start, so rate() sees an empty bin as 0.
                counters[statistic].append(
                    self.metrics.drift_observations.labels(
                        model_label, version_label, statistic, bin_label
                    )
                )
        cuts = {statistic: pair[0] for statistic, pair in parsed.items()}
        self._references[(model, version)] = Reference(cuts, counters)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
