"""Prometheus metrics of the embedded model server, under TensorFlow Serving's own names.

TF Serving exports its TensorFlow monitoring metrics with '/' turned into ':' and counters
without a `_total` suffix (`:tensorflow:serving:request_count`). prometheus_client would
append `_total`, so this module keeps its own small, thread-safe registry and renders the
text exposition format itself.

Names (the monitoring rules depend on them):

TF Serving's:
- `:tensorflow:serving:request_count{model_name,status}` counter
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}` histogram, microseconds;
  `entrypoint` is GRPC or REST (TF Serving's APIs), V2_GRPC or V2_REST (Open Inference Protocol)
- `:tensorflow:serving:runtime_latency{model_name,API,runtime}` histogram, microseconds
- `:tensorflow:serving:batching_session:queuing_latency{thread_pool_name}` histogram, microseconds
- `:tensorflow:serving:batching_session:wrapped_run_count` counter
- `:tensorflow:serving:batching_session:input_batch_size{model_name}` histogram
- `:tensorflow:serving:batching_session:processed_batch_size{model_name}` histogram
- `:tensorflow:core:load_attempt_count{model_path,status}` counter

Embedded-server additions:
- `:tensorflow:serving:embedded:request_version_count{model_name,version,status}` counter
- `:tensorflow:serving:embedded:loaded_versions{model_name}` gauge
- `:tensorflow:serving:embedded:model_version_state{model_name,version}` gauge
  (ModelVersionStatus.State number)
- `:tensorflow:serving:embedded:batch_queue_size{model_name}` gauge (requests waiting)
- `:tensorflow:serving:embedded:inflight_requests{model_name}` gauge (Predicts being served)

The process, under Prometheus' standard names (what prometheus_client's ProcessCollector
exports on Linux), so load reports show the server's CPU and memory next to the gateway's:
- `process_cpu_seconds_total`, `process_resident_memory_bytes`,
  `process_virtual_memory_bytes`, `process_start_time_seconds`, `process_open_fds`,
  `process_max_fds`
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """TF monitoring's Buckets::Exponential bounds: scale * growth**i for i < count."""
    # Rounded so the `le` labels read like TF Serving's ("32.4", not "32.400000000000006").
    return [float(f"{scale * growth**i:.12g}") for i in range(count)]


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, documentation: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        # ServingMetrics gives all its metrics one lock: a request's updates take it once.
        self.lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, label_names)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add `amount` to the cell of `labels`."""
        with self.lock:
            self.add_locked(labels, amount)

    def add_locked(self, labels: tuple[str, ...], amount: float) -> None:
        """`inc` for a caller that already holds the lock."""
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        """Current value of one cell (0 if never touched)."""
        with self.lock:
            return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        with self.lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_labels_text(self.label_names, k)} {_format_value(v)}" for k, v in items
        ]


class Gauge(Counter):
    """A value that goes up and down, or is set, per label set."""

    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        """Set the cell of `labels` to `value`."""
        with self.lock:
            self._values[labels] = value

    def add(self, *labels: str, amount: float) -> None:
        """Add `amount` (may be negative) to the cell of `labels`."""
        self.inc(*labels, amount=amount)

    def remove(self, *labels: str) -> None:
        """Drop a cell, e.g. a model that is no longer configured."""
        with self.lock:
            self._values.pop(labels, None)


class Histogram(_Metric):
    """Cumulative buckets plus sum and count per label set."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        label_names: Sequence[str] = (),
        buckets: Sequence[float] = (),
    ) -> None:
        super().__init__(name, documentation, label_names)
        self.bounds = list(buckets)
        self._cells: dict[tuple[str, ...], list[float]] = {}

    def observe(self, *labels: str, value: float) -> None:
        """Record one observation in the cell of `labels`."""
        with self.lock:
            self.observe_locked(labels, value)

    def observe_locked(self, labels: tuple[str, ...], value: float) -> None:
        """`observe` for a caller that already holds the lock."""
        cell = self._cells.get(labels)
        if cell is None:
            # bucket counts (+Inf last), then sum, then count
            cell = self._cells[labels] = [0.0] * (len(self.bounds) + 3)
        cell[bisect.bisect_left(self.bounds, value)] += 1
        cell[-2] += value
        cell[-1] += 1

    def observe_many(self, *labels: str, values: Sequence[float]) -> None:
        """Record several observations in the cell of `labels` (one lock for a whole batch)."""
        with self.lock:
            for value in values:
                self.observe_locked(labels, value)

    def count(self, *labels: str) -> float:
        """Number of observations in one cell."""
        with self.lock:
            cell = self._cells.get(labels)
            return cell[-1] if cell else 0.0

    def render(self) -> list[str]:
        with self.lock:
            items = sorted((k, list(v)) for k, v in self._cells.items())
        lines = []
        for labels, cell in items:
            cumulative = 0.0
            for bound, hits in zip([*self.bounds, math.inf], cell[:-2], strict=True):
                cumulative += hits
                le = f'le="{_format_value(bound)}"'
                lines.append(
                    f"{self.name}_bucket{_labels_text(self.label_names, labels, le)} "
                    f"{_format_value(cumulative)}"
                )
            suffix = _labels_text(self.label_names, labels)
            lines.append(f"{self.name}_sum{suffix} {_format_value(cell[-2])}")
            lines.append(f"{self.name}_count{suffix} {_format_value(cell[-1])}")
        return lines


class ServingMetrics:
    """Every metric the embedded server exports, in one registry instance (no globals)."""

    def __init__(self) -> None:
        # TF Serving: Exponential(10, 1.8, 33) microseconds (~20 minutes).
        latency_buckets = exponential_buckets(10, 1.8, 33)
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            latency_buckets,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            latency_buckets,
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            exponential_buckets(100, 1.2, 52),
        )
        self.wrapped_run_count = Counter(
            ":tensorflow:serving:batching_session:wrapped_run_count",
            "Total count of run calls on a wrapped session",
        )
        batch_buckets = exponential_buckets(1, 2, 14)
        self.input_batch_size = Histogram(
            ":tensorflow:serving:batching_session:input_batch_size",
            "Tracks the batch size distribution on the inputs by model_name (if available).",
            ("model_name",),
            batch_buckets,
        )
        self.processed_batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing by model_name (if available).",
            ("model_name",),
            batch_buckets,
        )
        self.load_attempt_count = Counter(
            ":tensorflow:core:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
        )
        self.request_version_count = Counter(
            ":tensorflow:serving:embedded:request_version_count",
            "Requests served, by the model version that served them (embedded server only).",
            ("model_name", "version", "status"),
        )
        self.loaded_versions = Gauge(
            ":tensorflow:serving:embedded:loaded_versions",
            "Number of AVAILABLE versions of each model (embedded server only).",
            ("model_name",),
        )
        self.model_version_state = Gauge(
            ":tensorflow:serving:embedded:model_version_state",
            "ModelVersionStatus.State number of each known version: 30 AVAILABLE, 50 END.",
            ("model_name", "version"),
        )
        self.batch_queue_size = Gauge(
            ":tensorflow:serving:embedded:batch_queue_size",
            "Requests waiting in the batching queue of each model (embedded server only).",
            ("model_name",),
        )
        self.inflight_requests = Gauge(
            ":tensorflow:serving:embedded:inflight_requests",
            "Requests being served right now (embedded server only).",
            ("model_name",),
        )
        self._all: list[_Metric] = [
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.queuing_latency,
            self.wrapped_run_count,
            self.input_batch_size,
            self.processed_batch_size,
            self.load_attempt_count,
            self.request_version_count,
            self.loaded_versions,
            self.model_version_state,
            self.batch_queue_size,
            self.inflight_requests,
        ]
        self.lock = threading.Lock()
        for metric in self._all:
            metric.lock = self.lock
        # The process metrics come from prometheus_client's own collector (it reads /proc,
        # and exports nothing where there is none), rendered into the same exposition.
        self._process_registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process_registry)

    def record_request(
        self,
        model_name: str,
        version: str,
        status: str,
        api: str,
        entrypoint: str,
        micros: float,
        *,
        count: bool = True,
    ) -> None:
        """One finished request (`api`: Predict, Classify, Regress): in-flight down, counts
        up, latency if OK, all under one lock. `count=False` leaves TF Serving's request
        count and latency to the adapter (TF Serving's REST server records them itself)."""
        with self.lock:
            self.inflight_requests.add_locked((model_name,), -1)
            if version:
                self.request_version_count.add_locked((model_name, version, status), 1)
            if count:
                self.record_locked(model_name, status, api, entrypoint, micros)

    def record_locked(
        self, model_name: str, status: str, api: str, entrypoint: str, micros: float
    ) -> None:
        """TF Serving's RecordModelRequestCount and, if OK, RecordRequestLatency."""
        self.request_count.add_locked((model_name, status), 1)
        if status == "OK":  # TF Serving times successful requests only
            self.request_latency.observe_locked((model_name, api, entrypoint), micros)

    def record_rest_request(self, model_name: str, status: str, method: str, micros: float) -> None:
        """http_server.cc: every /v1 request is counted under the model its path names (""
        when it names none) and timed, when OK, with the path's verb as the API label
        ("predict", "classify", "regress"; "" for status and metadata)."""
        with self.lock:
            self.record_locked(model_name, status, method, "REST", micros)

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of every metric with samples."""
        lines: list[str] = []
        for metric in self._all:
            samples = metric.render()
            if samples:
                lines.extend(metric.header())
                lines.extend(samples)
        return "\n".join(lines) + "\n" + generate_latest(self._process_registry).decode()


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
