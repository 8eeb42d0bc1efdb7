"""Read the gateway's prediction log (schema: docs/PREDICTION_LOG.md).

`LogReader(log_dir).records()` yields every record of every file, oldest file first. A
line that is torn (a crash mid-write leaves the last line without its newline) or
malformed (not a JSON object, an unknown schema version) is skipped and kept in
`reader.bad_lines` with its file and line number.

`summarize(log_dir)` is what `python -m trainer log summary` prints; `load_labelled`
turns labelled predictions into training data (images uint8 [N, 28, 28], labels [N]),
and `labelled_dataset` into a tf.data.Dataset, for fine-tuning.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_SCHEMAS = {1}
FILE_GLOB = "predictions-*.ndjson"
RECORD_TYPES = {"prediction", "feedback", "shadow"}


@dataclass(frozen=True)
class BadLine:
    """A line the reader skipped, and why."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class LogReader:
    """Reads every `predictions-*.ndjson` file under `log_dir`."""

    log_dir: Path
    bad_lines: list[BadLine] = field(default_factory=list)

    def files(self) -> list[Path]:
        """The log's files, oldest first (names sort by replica, hour and sequence; the
        hour is what matters, so sort on it first)."""
        files = self.log_dir.glob(FILE_GLOB)
        return sorted(files, key=lambda path: (path.stem.rsplit("-", 2)[-2:], path.name))

    def records(self) -> Iterator[dict[str, Any]]:
        """Every well-formed record; bad lines are recorded and skipped."""
        self.bad_lines = []
        for path in self.files():
            with path.open("rb") as lines:
                for number, raw in enumerate(lines, start=1):
                    record = self._parse(path, number, raw)
                    if record is not None:
                        yield record

    def _parse(self, path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
        if not raw.endswith(b"\n"):
            self.bad_lines.append(BadLine(path, number, "torn line (no newline at its end)"))
            return None
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            self.bad_lines.append(BadLine(path, number, f"not JSON: {error}"))
            return None
        if not isinstance(record, dict):
            self.bad_lines.append(BadLine(path, number, "not a JSON object"))
            return None
        if record.get("schema") not in SUPPORTED_SCHEMAS:
            self.bad_lines.append(BadLine(path, number, f"unknown schema {record.get('schema')!r}"))
            return None
        if record.get("type") not in RECORD_TYPES:
            self.bad_lines.append(BadLine(path, number, f"unknown type {record.get('type')!r}"))
            return None
        return record


def decode_input(encoded: str) -> np.ndarray:
    """A record's `input` (base64 of 784 row-major uint8 pixels) as a 28x28 array."""
    return np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).reshape(28, 28)


@dataclass
class VersionSummary:
    """What the log says about one model version."""

    predictions: int = 0
    inputs_logged: int = 0
    labelled: int = 0
    correct: int = 0
    classes: Counter = field(default_factory=Counter)
    shadow_agree: int = 0
    shadow_total: int = 0

    @property
    def labelled_share(self) -> float | None:
        return self.labelled / self.predictions if self.predictions else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


@dataclass
class LogSummary:
    """Counts per (model, version), the class mix, and what was skipped."""

    versions: dict[tuple[str, int], VersionSummary]
    true_labels: Counter
    shadow_labelled: dict[tuple[str, int], tuple[int, int]]  # (correct, labelled)
    bad_lines: list[BadLine]
    files: int


def summarize(log_dir: Path) -> LogSummary:
    """Read the whole log once and count."""
    reader = LogReader(log_dir)
    versions: dict[tuple[str, int], VersionSummary] = defaultdict(VersionSummary)
    true_labels: Counter = Counter()
    shadow_labelled: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for record in reader.records():
        key = (str(record.get("model")), int(record.get("version", 0)))
        kind = record["type"]
        if kind == "prediction":
            summary = versions[key]
            summary.predictions += 1
            summary.inputs_logged += bool(record.get("input"))
            summary.classes[record.get("class")] += 1
        elif kind == "feedback":
            versions[key].labelled += 1
            versions[key].correct += bool(record.get("correct"))
            true_labels[record.get("true_label")] += 1
            shadow = record.get("shadow")
            if shadow:
                counts = shadow_labelled[(key[0], int(shadow["version"]))]
                counts[0] += bool(shadow.get("correct"))
                counts[1] += 1
        else:
            served = versions[(key[0], int(record.get("served_version", 0)))]
            served.shadow_total += 1
            served.shadow_agree += record.get("class") == record.get("served_class")
    return LogSummary(
        dict(versions),
        true_labels,
        {key: (value[0], value[1]) for key, value in shadow_labelled.items()},
        reader.bad_lines,
        len(reader.files()),
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_summary(summary: LogSummary, log_dir: Path, max_bad_lines: int = 10) -> str:
    """The summary as the text `trainer log summary` prints."""
    lines = [f"prediction log {log_dir}: {summary.files} file(s)"]
    if not summary.versions:
        lines.append("no records")
    else:
        lines.append(
            f"{'model':<10} {'version':>7} {'predictions':>11} {'inputs':>7} {'labelled':>8} "
            f"{'share':>6} {'accuracy':>8} {'shadow agree':>12}"
        )
        for (model, version), row in sorted(summary.versions.items()):
            agree = row.shadow_agree / row.shadow_total if row.shadow_total else None
            lines.append(
                f"{model:<10} {version:>7} {row.predictions:>11} {row.inputs_logged:>7} "
                f"{row.labelled:>8} {_share(row.labelled_share):>6} "
                f"{_share(row.accuracy):>8} {_share(agree):>12}"
            )
        for (model, version), (correct, labelled) in sorted(summary.shadow_labelled.items()):
            lines.append(
                f"shadow {model} v{version}: {correct}/{labelled} labelled predictions "
                f"correct ({_share(correct / labelled)})"
            )
        predicted: Counter = Counter()
        for row in summary.versions.values():
            predicted.update(row.classes)
        total = sum(predicted.values())
        if total:
            mix = "  ".join(f"{c}:{predicted[c] / total:.0%}" for c in range(10))
            lines.append(f"predicted class mix: {mix}")
        labelled = sum(summary.true_labels.values())
        if labelled:
            mix = "  ".join(f"{c}:{summary.true_labels[c] / labelled:.0%}" for c in range(10))
            lines.append(f"true label mix:      {mix}")
    if summary.bad_lines:
        lines.append(f"skipped {len(summary.bad_lines)} torn or malformed line(s):")
        lines += [f"  {bad}" for bad in summary.bad_lines[:max_bad_lines]]
        if len(summary.bad_lines) > max_bad_lines:
            lines.append(f"  ... and {len(summary.bad_lines) - max_bad_lines} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class LabelledRecords:
    """Labelled predictions with their pixels, one per prediction id, in log order.

    `times` are the feedback records' times (when the label arrived), Unix seconds.
    """

    prediction_ids: list[str]
    times: np.ndarray  # float64 [N]
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.prediction_ids)

    def select(self, mask: np.ndarray) -> LabelledRecords:
        """The records where `mask` (bool [N]) is true."""
        ids = [pid for pid, keep in zip(self.prediction_ids, mask, strict=True) if keep]
        return LabelledRecords(ids, self.times[mask], self.images[mask], self.labels[mask])


def load_labelled_records(
    log_dir: Path, model: str | None = None, version: int | None = None
) -> LabelledRecords:
    """Labelled predictions with their ids and times (what `trainer finetune` reads).

    A feedback record carries its input; an older one without it takes the input of its
    prediction record when that was sampled; one whose input is lost is left out. Each
    prediction id counts once (its first label).
    """
    reader = LogReader(log_dir)
    sampled: dict[str, str] = {}
    labelled: dict[str, tuple[str | None, int, float]] = {}
    for record in reader.records():
        if model is not None and record.get("model") != model:
            continue
        if version is not None and record.get("version") != version:
            continue
        if record["type"] == "prediction" and record.get("input"):
            sampled[record["prediction_id"]] = record["input"]
        elif record["type"] == "feedback":
            labelled.setdefault(
                record["prediction_id"],
                (record.get("input"), record["true_label"], float(record.get("time") or 0.0)),
            )
    ids, times, images, labels = [], [], [], []
    for prediction_id, (encoded, label, time) in labelled.items():
        encoded = encoded or sampled.get(prediction_id)
        if encoded:
            ids.append(prediction_id)
            times.append(time)
            images.append(decode_input(encoded))
            labels.append(int(label))
    if not ids:
        return LabelledRecords(
            [], np.zeros((0,)), np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.int64)
        )
    return LabelledRecords(
        ids, np.asarray(times, np.float64), np.stack(images), np.asarray(labels, np.int64)
    )


def load_labelled(
    log_dir: Path, model: str | None = None, version: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled predictions with their pixels: (images uint8 [N, 28, 28], labels int64 [N]).

    A feedback record carries its input; an older one without it takes the input of its
    prediction record when that was sampled. Each prediction id counts once.
    """
    records = load_labelled_records(log_dir, model, version)
    return records.images, records.labels


def labelled_dataset(log_dir: Path, **filters: Any) -> Any:
    """The labelled predictions as a tf.data.Dataset of (float32 [28, 28] in [0, 1], label)."""
    import tensorflow as tf

    from trainer.data import scale_pixels

    images, labels = load_labelled(log_dir, **filters)
    return tf.data.Dataset.from_tensor_slices((scale_pixels(images), labels))
