"""The server side of a load run, from Prometheus, over exactly the run's time window.

The recording rules in monitoring/rules/recording.yml average over 5 minutes, longer than
most runs. So the report takes each rule's expression and evaluates it on the raw series
with the run's own window (`[5m]` becomes `[<run seconds>s]`), at the run's end: one value
per series for the whole run. Where no rule exists (the batching queue, the TensorFlow
run, per-version errors, process CPU and memory), the expression is written here in the
same style.

Together the panels answer where a slow p99 came from: the gateway's preprocessing, its
call to the model server, the model server's batching queue, or TensorFlow itself.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RECORDING_RULES = Path(__file__).absolute().parents[1] / "monitoring" / "rules" / "recording.yml"
RULE_WINDOW = re.compile(r"\[5m\]")
QUERY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Query:
    """One column of a panel: a PromQL expression with `{window}` for the run's range."""

    column: str
    expr: str
    rule: str | None = None  # the recording rule the expression comes from, if any


@dataclass(frozen=True)
class Panel:
    """A table of the report: one row per label set, one column per query."""

    title: str
    labels: tuple[str, ...]
    unit: str
    queries: tuple[Query, ...]
    scale: float = 1.0  # multiplies every value (seconds -> ms, bytes -> MiB)


def rule(column: str, record: str) -> Query:
    """A column whose expression is that of the recording rule `record`."""
    return Query(column=column, expr="", rule=record)


def quantile(column: str, q: float, histogram: str, by: str, scale: str = "") -> Query:
    """histogram_quantile over a raw histogram, in the recording rules' style."""
    expr = f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket[{{window}}])))"
    return Query(column=column, expr=f"{expr}{scale}")


# As the rules' error ratios: `or ... * 0` makes a version with calls but no error read 0.
UPSTREAM_ERROR_RATIO = """(
  sum by (model, version) (rate(gateway_upstream_duration_seconds_count{code!="OK"}[{window}]))
    or sum by (model, version) (rate(gateway_upstream_duration_seconds_count[{window}])) * 0
)
  / sum by (model, version) (rate(gateway_upstream_duration_seconds_count[{window}]))"""

PANELS: tuple[Panel, ...] = (
    Panel(
        "Gateway, end to end, by route",
        ("route",),
        "ms",
        (
            rule("p50", "route:gateway_request_duration_seconds:p50_rate5m"),
            rule("p95", "route:gateway_request_duration_seconds:p95_rate5m"),
            rule("p99", "route:gateway_request_duration_seconds:p99_rate5m"),
        ),
        scale=1000.0,
    ),
    Panel(
        "Gateway preprocessing, by input kind",
        ("input_kind",),
        "ms",
        (
            rule("p50", "input_kind:gateway_preprocess_duration_seconds:p50_rate5m"),
            rule("p99", "input_kind:gateway_preprocess_duration_seconds:p99_rate5m"),
        ),
        scale=1000.0,
    ),
    Panel(
        "Gateway's call to the model server, by version",
        ("model", "version"),
        "ms",
        (
            rule("p50", "model_version:gateway_upstream_duration_seconds:p50_rate5m"),
            rule("p95", "model_version:gateway_upstream_duration_seconds:p95_rate5m"),
            rule("p99", "model_version:gateway_upstream_duration_seconds:p99_rate5m"),
        ),
        scale=1000.0,
    ),
    Panel(
        "Model server, whole request, by API",
        ("model_name", "API"),
        "ms",
        (
            rule("p50", "model_name_api:tf_serving_request_latency_seconds:p50_rate5m"),
            rule("p95", "model_name_api:tf_serving_request_latency_seconds:p95_rate5m"),
            rule("p99", "model_name_api:tf_serving_request_latency_seconds:p99_rate5m"),
        ),
        scale=1000.0,
    ),
    Panel(
        "Model server's batching queue (wait before a batch runs)",
        ("thread_pool_name",),
        "ms",
        (
            quantile(
                "p50",
                0.5,
                ":tensorflow:serving:batching_session:queuing_latency",
                "thread_pool_name",
                " / 1e6",
            ),
            quantile(
                "p99",
                0.99,
                ":tensorflow:serving:batching_session:queuing_latency",
                "thread_pool_name",
                " / 1e6",
            ),
        ),
        scale=1000.0,
    ),
    Panel(
        "TensorFlow run, by model",
        ("model_name", "API"),
        "ms",
        (
            quantile(
                "p50", 0.5, ":tensorflow:serving:runtime_latency", "model_name, API", " / 1e6"
            ),
            quantile(
                "p99", 0.99, ":tensorflow:serving:runtime_latency", "model_name, API", " / 1e6"
            ),
        ),
        scale=1000.0,
    ),
    Panel(
        "Batch sizes (requests per model run)",
        ("model_name",),
        "requests",
        (
            rule("mean", "model_name:tf_serving_processed_batch_size:mean_rate5m"),
            rule("p99", "model_name:tf_serving_processed_batch_size:p99_rate5m"),
        ),
    ),
    Panel(
        "Requests and errors by version (gateway's calls)",
        ("model", "version"),
        "",
        (
            rule("req/s", "model_version:gateway_upstream_requests:rate5m"),
            # No rule per version: the gateway's upstream histogram carries the gRPC code.
            Query("error ratio", UPSTREAM_ERROR_RATIO),
        ),
    ),
    Panel(
        "Model server requests and errors",
        ("model_name",),
        "",
        (
            rule("req/s", "model_name:tf_serving_requests:rate5m"),
            rule("error ratio", "model_name:tf_serving_request_errors:ratio_rate5m"),
        ),
    ),
    Panel(
        "Gateway requests and errors (5xx), by route",
        ("route",),
        "",
        (
            rule("req/s", "route:gateway_requests:rate5m"),
            rule("error ratio", "route:gateway_request_errors:ratio_rate5m"),
        ),
    ),
    Panel(
        "CPU and memory of each process",
        ("job", "instance"),
        "",
        (
            Query(
                "CPU (cores)",
                "sum by (job, instance) (rate(process_cpu_seconds_total[{window}]))",
            ),
            Query(
                "peak RSS (MiB)",
                "max by (job, instance) (max_over_time(process_resident_memory_bytes[{window}]))"
                " / 2^20",
            ),
        ),
    ),
)

# The stages a predict request passes through, outermost first: (stage, panel, column, and
# a text the row's labels must contain: the gateway also serves status and feedback routes).
P99_STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("gateway, end to end (predict routes)", PANELS[0].title, "p99", "/predict"),
    ("gateway preprocessing", PANELS[1].title, "p99", ""),
    ("gateway's call to the model server", PANELS[2].title, "p99", ""),
    ("model server, whole request", PANELS[3].title, "p99", ""),
    ("model server's batching queue", PANELS[4].title, "p99", ""),
    ("TensorFlow run", PANELS[5].title, "p99", ""),
)


@dataclass
class PanelResult:
    """A panel's values: rows of (label values, one value or None per column)."""

    panel: Panel
    rows: list[tuple[tuple[str, ...], list[float | None]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def column(self, name: str, labels_containing: str = "") -> list[float]:
        """Every known value of one column (of the rows whose labels contain a text)."""
        index = [query.column for query in self.panel.queries].index(name)
        return [
            values[index]
            for labels, values in self.rows
            if values[index] is not None and any(labels_containing in label for label in labels)
        ]

    def to_json(self) -> dict:
        return {
            "title": self.panel.title,
            "labels": list(self.panel.labels),
            "unit": self.panel.unit,
            "columns": [query.column for query in self.panel.queries],
            "rows": [{"labels": list(labels), "values": values} for labels, values in self.rows],
            "errors": self.errors,
        }


@dataclass
class ServerSide:
    """Everything the report shows from Prometheus for one run."""

    prometheus_url: str
    start: float
    end: float
    window_seconds: int
    panels: list[PanelResult] = field(default_factory=list)
    unreachable: str | None = None

    def p99_by_stage(self) -> list[tuple[str, float | None]]:
        """The worst p99 of each stage over the run (None where nothing was recorded)."""
        by_title = {result.panel.title: result for result in self.panels}
        stages = []
        for stage, title, column, labels_containing in P99_STAGES:
            result = by_title.get(title)
            values = result.column(column, labels_containing) if result else []
            stages.append((stage, max(values) if values else None))
        return stages

    def to_json(self) -> dict:
        return {
            "prometheus_url": self.prometheus_url,
            "start": self.start,
            "end": self.end,
            "window_seconds": self.window_seconds,
            "unreachable": self.unreachable,
            "panels": [result.to_json() for result in self.panels],
        }


class PrometheusError(RuntimeError):
    """Prometheus could not be reached, or refused a query."""


def load_rule_expressions(path: Path = RECORDING_RULES) -> dict[str, str]:
    """Every recording rule's expression by its record name."""
    document = yaml.safe_load(path.read_text())
    return {
        rule["record"]: rule["expr"]
        for group in document["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def windowed(expr: str, window_seconds: int) -> str:
    """A recording rule's expression with its 5-minute range replaced by the run's window."""
    return RULE_WINDOW.sub(f"[{window_seconds}s]", expr)


def expression(query: Query, rules: dict[str, str], window_seconds: int) -> str:
    """The PromQL a query sends for a window of `window_seconds`."""
    if query.rule is not None:
        if query.rule not in rules:
            raise KeyError(f"no recording rule {query.rule!r} in {RECORDING_RULES}")
        return windowed(rules[query.rule], window_seconds)
    return query.expr.replace("{window}", f"{window_seconds}s")


def instant_query(prometheus_url: str, expr: str, at: float) -> list[dict]:
    """Evaluate `expr` at time `at`; return the vector's samples."""
    params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?{params}"
    try:
        with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries Prometheus' reason
        body = json.loads(error.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise PrometheusError(f"Prometheus at {prometheus_url} did not answer: {error}") from error
    if body.get("status") != "success":
        raise PrometheusError(f"{body.get('error', body)} in {expr!r}")
    return body["data"]["result"]


def number(text: str) -> float | None:
    """A sample value, or None for NaN and infinities (a quantile of nothing)."""
    value = float(text)
    return value if math.isfinite(value) else None


def query_panel(
    prometheus_url: str, panel: Panel, rules: dict[str, str], window_seconds: int, at: float
) -> PanelResult:
    """Run every query of a panel and join the results on the panel's labels."""
    result = PanelResult(panel)
    table: dict[tuple[str, ...], list[float | None]] = {}
    for index, query in enumerate(panel.queries):
        try:
            samples = instant_query(prometheus_url, expression(query, rules, window_seconds), at)
        except (PrometheusError, KeyError) as error:
            result.errors.append(f"{query.column}: {error}")
            continue
        for sample in samples:
            labels = tuple(sample["metric"].get(name, "") for name in panel.labels)
            row = table.setdefault(labels, [None] * len(panel.queries))
            value = number(sample["value"][1])
            row[index] = None if value is None else value * panel.scale
    # A series that exists but saw nothing in the window (an idle route, a model asked for
    # before the run) is all zeros and NaNs: left out, so the tables show this run only.
    result.rows = sorted(
        (labels, values) for labels, values in table.items() if any(value for value in values)
    )
    return result


def collect_server_side(
    prometheus_url: str,
    start: float,
    end: float,
    panels: tuple[Panel, ...] = PANELS,
    rules_path: Path = RECORDING_RULES,
) -> ServerSide:
    """Query every panel over [start, end] (unix seconds); never raises for Prometheus."""
    window_seconds = max(1, math.ceil(end - start))
    server_side = ServerSide(prometheus_url, start, end, window_seconds)
    try:
        instant_query(prometheus_url, "vector(1)", end)
    except PrometheusError as error:
        server_side.unreachable = str(error)
        return server_side
    rules = load_rule_expressions(rules_path)
    server_side.panels = [
        query_panel(prometheus_url, panel, rules, window_seconds, end) for panel in panels
    ]
    return server_side
