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
# A version without a reference (or a failed call) is asked again after this long.
RETRY_SECONDS = 60.0
# bbox_size, bbox_center_x and bbox_center_y of an image without ink.
NO_INK = np.array([[0.0], [-1.0], [-1.0]])


def statistics_table(batch: np.ndarray, classes: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """Each statistic's value per instance, float64 [len(STATISTICS), N], of a float
    [N, 28, 28] batch in [0, 1]. Few numpy calls: this runs on every prediction."""
    count, side = batch.shape[0], batch.shape[1]
    ink = batch > INK_THRESHOLD
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom = side - 1 - rows[:, ::-1].argmax(axis=1)
    right = side - 1 - cols[:, ::-1].argmax(axis=1)
    has_ink = rows.any(axis=1)
    table = np.empty((len(STATISTICS), count))
    table[0] = classes
    table[1] = confidences
    table[2] = np.count_nonzero(ink.reshape(count, -1), axis=1) / float(side * side)
    table[3] = batch.reshape(count, -1).sum(axis=1, dtype=np.float64) / float(side * side)
    table[4] = (bottom - top + 1) * (right - left + 1) / float(side * side)
    table[5] = (left + right) / 2.0
    table[6] = (top + bottom) / 2.0
    empty = ~has_ink
    if empty.any():
        table[4:, empty] = NO_INK
    return table


def live_statistics(
    batch: np.ndarray, classes: np.ndarray, confidences: np.ndarray
) -> dict[str, np.ndarray]:
    """`statistics_table` as {statistic: values}."""
    table = statistics_table(batch, classes, confidences)
    return dict(zip(STATISTICS, table, strict=True))


@dataclass
class Reference:
    """A version's bins: the cut points of every statistic in one table (padded with +inf,
    which no value reaches), and the live counts [statistic, bin]."""

    cuts: np.ndarray
    counts: np.ndarray
    # The statistics this reference has, as rows of `statistics_table`, and as rows of
    # `cuts` and `counts`.
    rows: np.ndarray
    index: np.ndarray


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
        reference = self._references.get((model, version))
        if reference is None:
            self._ask((model, version))
            return
        values = statistics_table(batch, classes, confidences)[reference.rows]
        # A value's bin is the number of cuts at or below it (searchsorted, side="right").
        bins = (values[:, :, np.newaxis] >= reference.cuts[:, np.newaxis, :]).sum(axis=2)
        if bins.shape[1] == 1:
            reference.counts[reference.index, bins[:, 0]] += 1
        else:
            np.add.at(reference.counts, (reference.index[:, np.newaxis], bins), 1)

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
        statistics = [statistic for statistic in STATISTICS if statistic in parsed]
        bins = [len(parsed[statistic][1]) for statistic in statistics]
        cuts = np.full((len(statistics), max(bins) - 1 or 1), np.inf)
        for row, statistic in enumerate(statistics):
            statistic_cuts, proportions = parsed[statistic]
            cuts[row, : len(statistic_cuts)] = statistic_cuts
            for index, share in enumerate(proportions.tolist()):
                self.metrics.drift_reference.labels(
                    model_label, version_label, statistic, str(index)
                ).set(share)
        # Every bin exists from the start, so rate() sees an empty bin as 0.
        counts = self.metrics.drift_observations.table(model_label, version_label, statistics, bins)
        rows = np.array([STATISTICS.index(statistic) for statistic in statistics])
        index = np.arange(len(statistics))
        self._references[(model, version)] = Reference(cuts, counts, rows, index)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
