"""The gateway's Prometheus metrics.

Their names and labels are an interface (the rules in monitoring/rules/ and the dashboard
read them); docs/CONTRACTS.md lists them. Label values come only from bounded sets: route
templates, known methods, models and version labels from the settings, versions the model
server answered with, classes 0-9. Anything a client typed that is not in those sets is
recorded as "unknown", so no request can add series.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily

# Latency buckets in seconds, dense where the gateway's p50/p99 live (1-50 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
UNKNOWN = "unknown"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class MetricLabels:
    """Turns what a request named into label values from bounded sets."""

    def __init__(self, models: Iterable[str] = (), version_labels: Iterable[str] = ()) -> None:
        self.models = frozenset(models)
        self.version_labels = frozenset(version_labels)
        # Grows only with versions the model server answered with, never with a client's.
        self._served: set[tuple[str, int]] = set()

    def model(self, name: str) -> str:
        """The model's name if the gateway serves it, else "unknown"."""
        return name if name in self.models else UNKNOWN

    def method(self, method: str) -> str:
        """The HTTP method if it is a standard one, else "OTHER"."""
        return method if method in HTTP_METHODS else "OTHER"

    def served_version(self, model: str, version: int) -> str:
        """The version that answered (remembered, so a later pin to it is known)."""
        self._served.add((model, version))
        return str(version)

    def asked_version(self, model: str, version: int | None, label: str | None) -> str:
        """What a call asked for, when nothing answered: a known version or label,
        "latest" for an un-pinned call, else "unknown"."""
        if version is not None:
            return str(version) if (model, version) in self._served else UNKNOWN
        if label:
            return label if label in self.version_labels else UNKNOWN
        return "latest"


class BinCounters:
    """A counter family `{model, version, statistic, bin}` kept as one numpy table per
    version: a prediction adds to every statistic's bin with one array operation, where a
    prometheus_client child per bin cost a lock and a call each (drift's whole cost).
    Exported at scrape time as an ordinary counter."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._tables: dict[tuple[str, str], tuple[Sequence[str], list[int], np.ndarray]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def table(
        self, model: str, version: str, statistics: Sequence[str], bins: list[int]
    ) -> np.ndarray:
        """A zeroed int64 table [statistic, bin] for one version; the caller adds to it."""
        counts = np.zeros((len(statistics), max(bins)), dtype=np.int64)
        with self._lock:
            self._tables[(model, version)] = (tuple(statistics), list(bins), counts)
        return counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            self.name, self.documentation, labels=["model", "version", "statistic", "bin"]
        )
        with self._lock:
            tables = list(self._tables.items())
        for (model, version), (statistics, bins, counts) in tables:
            values = counts.tolist()
            for row, statistic in enumerate(statistics):
                for index in range(bins[row]):
                    family.add_metric(
                        [model, version, statistic, str(index)], float(values[row][index])
                    )
        yield family


class GatewayMetrics:
    """One registry per app, so each app (and each test) starts from zero."""

    def __init__(
        self, registry: CollectorRegistry | None = None, labels: MetricLabels | None = None
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # A registry of its own has no process_* metrics unless asked; load reports
            # read the gateway's CPU and memory from them (process_cpu_seconds_total, ...).
            ProcessCollector(registry=registry)
        self.registry = registry
        self.labels = labels or MetricLabels()
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request start to response end, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.preprocess_duration = Histogram(
            "gateway_preprocess_duration_seconds",
            "Time to turn one request's input into the model's tensor, by input kind.",
            ["input_kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Predict calls only: their count is each version's request rate in the rules, so
        # status calls (readiness probes, GET /v1/models) must not add to it.
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time of Predict calls to the model server, by model, version and gRPC code.",
            ["model", "version", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_info_duration = Histogram(
            "gateway_upstream_info_duration_seconds",
            "Time of GetModelStatus and GetModelMetadata calls, by model, method and gRPC code.",
            ["model", "method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "gateway_predictions",
            "Predictions returned, by model, version and predicted class.",
            ["model", "version", "class"],
            registry=self.registry,
        )
        self.confidence = Histogram(
            "gateway_prediction_confidence",
            "Probability of the predicted class, by model and version.",
            ["model", "version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.feedback = Counter(
            "gateway_feedback",
            "Feedback on predictions, by model, version and outcome (correct|incorrect).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.feedback_rejected = Counter(
            "gateway_feedback_rejected",
            "Feedback items not scored, by reason (duplicate|expired|invalid).",
            ["reason"],
            registry=self.registry,
        )
        self.version_label_info = Gauge(
            "gateway_version_label_info",
            "1 for the version a label (stable, canary) last resolved to, by model.",
            ["model", "version", "label"],
            registry=self.registry,
        )
        # Prediction log (gateway/prediction_log.py) and the per-prediction memory that
        # keeps inputs and shadow answers for the feedback window.
        self.log_records = Counter(
            "gateway_prediction_log_records",
            "Records appended to the prediction log, by type (prediction|feedback|shadow).",
            ["type"],
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "gateway_prediction_log_dropped",
            "Prediction-log records or remembered inputs lost, by reason "
            "(queue_full|write_error|memory_full|memory_error).",
            ["reason"],
            registry=self.registry,
        )
        # Shadow traffic (gateway/shadow.py), counted per instance, never in the served
        # version's metrics.
        self.shadow_requests = Counter(
            "gateway_shadow_requests",
            "Shadow predictions by model, shadow version and outcome "
            "(agree|disagree|error|dropped).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.shadow_duration = Histogram(
            "gateway_shadow_duration_seconds",
            "Time of Predict calls to the shadow version, success or failure.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_feedback = Counter(
            "gateway_shadow_feedback",
            "Feedback scored against the shadow version's answer (correct|incorrect).",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        # Rollout records (gateway/rollout_record.py): the shares this replica applies from
        # the controller's record of each model (no series: no record, env settings route),
        # and how stale that record may be.
        self.rollout_canary_percent = Gauge(
            "gateway_rollout_canary_percent",
            "Share of un-pinned traffic the rollout record sends to the candidate, by model.",
            ["model"],
            registry=self.registry,
        )
        self.rollout_shadow_percent = Gauge(
            "gateway_rollout_shadow_percent",
            "Share of predictions the rollout record copies to the candidate, by model.",
            ["model"],
            registry=self.registry,
        )
        self.rollout_record_age = Gauge(
            "gateway_rollout_record_age_seconds",
            "Seconds since the record in force was last read from Redis, by model.",
            ["model"],
            registry=self.registry,
        )
        self.rollout_refresh_errors = Counter(
            "gateway_rollout_refresh_errors",
            "Rollout record refreshes that failed (unavailable) or records ignored (malformed).",
            ["reason"],
            registry=self.registry,
        )
        # Drift (gateway/drift.py): live bin counts and the version's reference shares;
        # the recording rules compute the population stability index from them.
        self.drift_observations = BinCounters(
            "gateway_drift_observations",
            "Predictions whose statistic fell in each reference bin.",
            self.registry,
        )
        self.drift_reference = Gauge(
            "gateway_drift_reference_ratio",
            "Share of the version's held-out data in each bin of each statistic.",
            ["model", "version", "statistic", "bin"],
            registry=self.registry,
        )
        # Labels move between versions during a rollout; remember where each one points so
        # the old series is removed and rules never see a label on two versions at once.
        self._label_versions: dict[tuple[str, str], str] = {}
        self._label_lock = threading.Lock()

    def observe_version_label(self, model: str, label: str, version: int) -> None:
        """Record that `label` of `model` resolved to `version` (for canary-vs-stable rules).

        Only the labels the gateway routes to by itself are recorded.
        """
        if label not in self.labels.version_labels:
            return
        model = self.labels.model(model)
        current = str(version)
        with self._label_lock:
            previous = self._label_versions.get((model, label))
            if previous == current:
                return
            if previous is not None:
                self.version_label_info.remove(model, previous, label)
            self._label_versions[(model, label)] = current
            self.version_label_info.labels(model, current, label).set(1)
