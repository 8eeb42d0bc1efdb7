"""The report of a load run: a Markdown summary, charts, and the server side from Prometheus.

`build_report(run_dir)` reads what Locust wrote into the run directory (`locust_stats.csv`,
`locust_stats_history.csv`, `locust_failures.csv`, `locust_exceptions.csv`, and the SLO
verdict `locust_slo.json` when the run ended there) and writes:

- `summary.md`: the SLO verdicts; requests/s, p50, p95 and p99 per request kind; failures
  by cause; and, with a Prometheus URL, the server side over the same window
  (`server_side.py`);
- `charts/throughput.png`, `charts/latency.png`, `charts/users.png` (matplotlib);
- `report.json`: the same figures for `compare`.

Locust's own `locust.html` stays beside them.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadtests import slo
from loadtests.run import FILE_PREFIX, RUN_FILE
from loadtests.server_side import ServerSide, collect_server_side

SUMMARY_FILE = "summary.md"
REPORT_FILE = "report.json"
CHARTS_DIR = "charts"
AGGREGATED = "Aggregated"
MAX_CAUSE_TEXT = 160
NO_VALUE = "-"
# Locust's "current" percentiles in the history cover a sliding window of this many seconds.
CURRENT_PERCENTILE_WINDOW_SECONDS = 10
# Two of Locust's worker report intervals (3 s): see moving_rate.
THROUGHPUT_WINDOW_SECONDS = 6.0


@dataclass(frozen=True)
class KindStats:
    """One request kind's figures over the whole run (a row of locust_stats.csv)."""

    method: str
    name: str
    requests: int
    failures: int
    requests_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def kind(self) -> str:
        return f"{self.method} {self.name}".strip()

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class FailureCause:
    """Failures with one cause, over every request kind that met it."""

    cause: str
    occurrences: int
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class HistoryPoint:
    """One row of the stats history: a request kind (or the total) at one second."""

    timestamp: float
    users: int
    kind: str
    total_requests: int
    total_failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def locust_file(run_dir: Path, suffix: str) -> Path:
    """A file Locust wrote with the run's prefix, e.g. `_stats.csv`."""
    return run_dir / f"{FILE_PREFIX}{suffix}"


def _float(text: str | None) -> float | None:
    if text in (None, "", "N/A"):
        return None
    return float(text)


def _percentiles(row: dict[str, str]) -> dict[str, float | None]:
    """p50, p95 and p99 in ms of a Locust CSV row (None where it has none yet)."""
    return {
        "p50_ms": _float(row["50%"]),
        "p95_ms": _float(row["95%"]),
        "p99_ms": _float(row["99%"]),
    }


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_request_stats(run_dir: Path) -> list[KindStats]:
    """Every request kind of locust_stats.csv, the Aggregated row last."""
    stats = [
        KindStats(
            method=row["Type"],
            name=row["Name"],
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            requests_per_second=float(row["Requests/s"]),
            **_percentiles(row),
            max_ms=_float(row["Max Response Time"]),
        )
        for row in _rows(locust_file(run_dir, "_stats.csv"))
    ]
    return sorted(stats, key=lambda kind: (kind.name == AGGREGATED, kind.kind))


def read_history(run_dir: Path) -> list[HistoryPoint]:
    """locust_stats_history.csv: the total ("Aggregated") and each kind, once a second."""
    return [
        HistoryPoint(
            timestamp=float(row["Timestamp"]),
            users=int(row["User Count"]),
            kind=f"{row['Type']} {row['Name']}".strip(),
            total_requests=int(row["Total Request Count"]),
            total_failures=int(row["Total Failure Count"]),
            **_percentiles(row),
        )
        for row in _rows(locust_file(run_dir, "_stats_history.csv"))
    ]


GRPC_STATUS = re.compile(r"status = StatusCode\.(\w+)")
GRPC_DETAILS = re.compile(r'details = "(.*?)"\s*$', re.MULTILINE)
WRAPPED_ERROR = re.compile(r"^\w+\(['\"](.*)['\"]\)$", re.DOTALL)


def describe_cause(error: str) -> str:
    """One short line for a failure's error text, as Locust recorded it.

    gRPC errors become "gRPC <CODE>: <details>"; an exception wrapper such as
    `CatchResponseError('HTTP 404: ...')` is reduced to its message.
    """
    if status := GRPC_STATUS.search(error):
        details = GRPC_DETAILS.search(error)
        text = f"gRPC {status[1]}: {details[1]}" if details else f"gRPC {status[1]}"
    elif wrapped := WRAPPED_ERROR.match(error.strip()):
        text = wrapped[1].replace("\\'", "'")
    else:
        text = error
    text = " ".join(text.split())
    return text if len(text) <= MAX_CAUSE_TEXT else text[: MAX_CAUSE_TEXT - 1] + "…"


def read_failure_causes(run_dir: Path) -> list[FailureCause]:
    """locust_failures.csv grouped by cause, most frequent first."""
    occurrences: dict[str, int] = {}
    kinds: dict[str, set[str]] = {}
    for row in _rows(locust_file(run_dir, "_failures.csv")):
        cause = describe_cause(row["Error"])
        occurrences[cause] = occurrences.get(cause, 0) + int(row["Occurrences"])
        kinds.setdefault(cause, set()).add(f"{row['Method']} {row['Name']}")
    return [
        FailureCause(cause, count, tuple(sorted(kinds[cause])))
        for cause, count in sorted(occurrences.items(), key=lambda item: (-item[1], item[0]))
    ]


def read_exceptions(run_dir: Path) -> list[tuple[int, str]]:
    """Errors raised in the load users' own code: (count, message)."""
    return [
        (int(row["Count"]), describe_cause(row["Message"]))
        for row in _rows(locust_file(run_dir, "_exceptions.csv"))
    ]


def read_verdict(run_dir: Path, stats: list[KindStats]) -> tuple[dict, str]:
    """The SLO verdict and where it came from.

    A run that ended normally wrote locust_slo.json from Locust's final stats. A run fetched
    from a master that is still up (Kubernetes) has none: the verdict is then computed from
    the stats CSV with the SLO_* thresholds of this environment.
    """
    verdict_file = locust_file(run_dir, "_slo.json")
    if verdict_file.exists():
        return json.loads(verdict_file.read_text()), "the master's SLO gate (locust_slo.json)"
    total = next((kind for kind in stats if kind.name == AGGREGATED), None)
    summary = slo.RunSummary(
        requests=total.requests if total else 0,
        failures=total.failures if total else 0,
        p95_ms=(total.p95_ms or 0.0) if total else 0.0,
        p99_ms=(total.p99_ms or 0.0) if total else 0.0,
    )
    thresholds = slo.SloThresholds(
        p95_ms=float(os.environ.get("SLO_P95_MS", slo.DEFAULT_P95_MS)),
        p99_ms=float(os.environ.get("SLO_P99_MS", slo.DEFAULT_P99_MS)),
        max_failure_ratio=float(
            os.environ.get("SLO_MAX_FAILURE_RATIO", slo.DEFAULT_MAX_FAILURE_RATIO)
        ),
    )
    verdict = slo.evaluate(summary, thresholds)
    document = {
        "passed": verdict.passed,
        "breaches": list(verdict.breaches),
        "thresholds": asdict(thresholds),
        "measured": {**asdict(summary), "failure_ratio": summary.failure_ratio},
    }
    return document, "the stats CSV, with this environment's SLO_* thresholds"


def run_window(history: list[HistoryPoint], run: dict) -> tuple[float, float] | None:
    """(start, end) in unix seconds: from the first second with users to the last row."""
    with_users = [point.timestamp for point in history if point.users > 0]
    if with_users:
        # A history row sums the second before its timestamp.
        return min(with_users) - 1, max(point.timestamp for point in history)
    times = [run.get("started_at"), run.get("finished_at")]
    if all(times):
        start, end = (datetime.fromisoformat(text).timestamp() for text in times)
        return start, end
    return None


# --------------------------------------------------------------------------- charts


def moving_rate(
    points: list[HistoryPoint], window_seconds: float = THROUGHPUT_WINDOW_SECONDS
) -> tuple[list[float], list[float], list[float]]:
    """(times, requests/s, failures/s) of one series, each over the trailing window.

    The history holds running totals. In a distributed run the master's totals move only
    when a worker reports (every 3 s), so a per-second difference would saw between 0 and
    three seconds' worth; a window of two report intervals reads the actual rate. The first
    seconds, before a whole window has passed, have no value.
    """
    times, requests, failures = [], [], []
    for index, point in enumerate(points):
        earliest = next(
            (p for p in points[:index] if p.timestamp >= point.timestamp - window_seconds), None
        )
        if earliest is None or point.timestamp - earliest.timestamp < window_seconds:
            continue
        elapsed = point.timestamp - earliest.timestamp
        times.append(point.timestamp)
        requests.append((point.total_requests - earliest.total_requests) / elapsed)
        failures.append((point.total_failures - earliest.total_failures) / elapsed)
    return times, requests, failures


def write_charts(
    run_dir: Path, history: list[HistoryPoint], window: tuple[float, float] | None
) -> list[Path]:
    """Throughput, latency percentiles and users over the run's window, as PNGs in charts/.

    Seconds count from the window's start: a distributed master's history also holds the
    seconds it waited for its workers, which are not part of the run.
    """
    if window is not None:
        history = [point for point in history if window[0] <= point.timestamp <= window[1]]
    if not history:
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    from matplotlib import pyplot

    charts = run_dir / CHARTS_DIR
    charts.mkdir(exist_ok=True)
    origin = window[0] if window is not None else min(point.timestamp for point in history)
    total = [point for point in history if point.kind == AGGREGATED]
    kinds = sorted({point.kind for point in history} - {AGGREGATED})

    def relative(times: list[float]) -> list[float]:
        return [time - origin for time in times]

    written = []

    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    seconds, requests, failures = moving_rate(total)
    axes.plot(relative(seconds), requests, color="black", linewidth=2, label="all requests")
    axes.plot(relative(seconds), failures, color="red", linewidth=1.5, label="failures")
    for kind in kinds:
        kind_seconds, kind_requests, _ = moving_rate([p for p in history if p.kind == kind])
        axes.plot(relative(kind_seconds), kind_requests, linewidth=0.8, label=kind)
    axes.set(
        title=f"Throughput ({THROUGHPUT_WINDOW_SECONDS:g} s moving window)",
        xlabel="seconds into the run",
        ylabel="requests per second",
    )
    axes.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    written.append(_save(figure, charts / "throughput.png"))

    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    times = relative([point.timestamp for point in total])
    for label, values in (
        ("p50", [point.p50_ms for point in total]),
        ("p95", [point.p95_ms for point in total]),
        ("p99", [point.p99_ms for point in total]),
    ):
        axes.plot(
            times, [value if value is not None else float("nan") for value in values], label=label
        )
    axes.set(
        title=f"Latency percentiles, all requests (over the last "
        f"{CURRENT_PERCENTILE_WINDOW_SECONDS} s)",
        xlabel="seconds into the run",
        ylabel="milliseconds",
    )
    axes.legend()
    written.append(_save(figure, charts / "latency.png"))

    figure, axes = pyplot.subplots(figsize=(9, 3))
    axes.step(times, [point.users for point in total], where="post", color="tab:green")
    axes.set(title="Users", xlabel="seconds into the run", ylabel="users")
    written.append(_save(figure, charts / "users.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    figure.clf()
    import matplotlib.pyplot

    matplotlib.pyplot.close(figure)
    return path


# --------------------------------------------------------------------------- summary


def _ms(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return NO_VALUE
    if unit == "ms":
        return _ms(value)
    if abs(value) < 10:
        return f"{value:.3g}" if value else "0"
    return f"{value:,.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_summary(
    run_dir: Path,
    run: dict,
    stats: list[KindStats],
    verdict: tuple[dict, str],
    causes: list[FailureCause],
    exceptions: list[tuple[int, str]],
    charts: list[Path],
    window: tuple[float, float] | None,
    server_side: ServerSide | None,
) -> str:
    """The Markdown summary of a run."""
    document, verdict_source = verdict
    lines = [f"# Load test report: {run.get('name', run_dir.name)}", ""]
    when = "unknown"
    if window is not None:
        start, end = (datetime.fromtimestamp(t, UTC) for t in window)
        seconds = (end - start).total_seconds()
        when = f"{start:%Y-%m-%d %H:%M:%S} → {end:%H:%M:%S} UTC ({seconds:.0f} s)"
    if "source" in run:
        mode = f"{run['source']}, {run.get('workers_connected') or 'no'} workers connected"
    elif run.get("workers"):
        mode = f"distributed: 1 master, {run['workers']} workers"
    else:
        mode = "one process"
    facts = [["when", when], ["Locust", mode]]
    if "locust_args" in run:
        facts.append(["Locust options", " ".join(run["locust_args"]) or NO_VALUE])
        settings = ", ".join(f"{key}={value}" for key, value in run.get("settings", {}).items())
        facts.append(["scenario settings", settings or "defaults"])
    if "exit_code" in run:
        facts.append(["exit code", str(run["exit_code"])])
    lines += [*_table(["run", ""], facts), ""]

    passed = document["passed"]
    lines += [f"## SLO verdict: {'met' if passed else 'breached'}", ""]
    thresholds, measured = document["thresholds"], document["measured"]
    breached = " ".join(document["breaches"])
    rows = [
        [
            "p95 latency",
            f"≤ {thresholds['p95_ms']:g} ms",
            f"{measured['p95_ms']:.1f} ms",
            "breached" if "p95" in breached else "met",
        ],
        [
            "p99 latency",
            f"≤ {thresholds['p99_ms']:g} ms",
            f"{measured['p99_ms']:.1f} ms",
            "breached" if "p99" in breached else "met",
        ],
        [
            "failed requests",
            f"≤ {thresholds['max_failure_ratio']:.2%}",
            f"{measured['failure_ratio']:.2%} ({measured['failures']} of {measured['requests']})",
            "breached" if "failure ratio" in breached else "met",
        ],
    ]
    lines += _table(["objective", "threshold", "measured", "verdict"], rows)
    if measured["requests"] == 0:
        lines += ["", "No request was made, so no objective could be checked: breached."]
    lines += ["", f"Verdict from {verdict_source}.", ""]

    lines += ["## Requests by kind", ""]
    rows = [
        [
            kind.kind if kind.name != AGGREGATED else "**all requests**",
            f"{kind.requests:,}",
            f"{kind.failures:,}",
            f"{kind.requests_per_second:,.1f}",
            _ms(kind.p50_ms),
            _ms(kind.p95_ms),
            _ms(kind.p99_ms),
            _ms(kind.max_ms),
        ]
        for kind in stats
    ]
    lines += _table(
        ["request kind", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows,
    )
    lines += ["", "## Failures by cause", ""]
    if causes:
        lines += _table(
            ["cause", "occurrences", "request kinds"],
            [[c.cause, f"{c.occurrences:,}", ", ".join(c.kinds)] for c in causes],
        )
    else:
        lines.append("None.")
    if exceptions:
        lines += [
            "",
            "Errors raised in the load users' own code (a bug in the test, not the target):",
            "",
        ]
        lines += _table(["count", "error"], [[str(count), text] for count, text in exceptions])
    lines.append("")

    if charts:
        lines += ["## Charts", ""]
        lines += [f"![{chart.stem}]({CHARTS_DIR}/{chart.name})" for chart in charts]
        lines += [
            "",
            "Throughput comes from Locust's running totals over a "
            f"{THROUGHPUT_WINDOW_SECONDS:g} s moving window (workers report every 3 s); the "
            "percentiles are Locust's current ones, over the last "
            f"{CURRENT_PERCENTILE_WINDOW_SECONDS} s.",
            "",
        ]

    lines += render_server_side(server_side)
    lines += [
        "## Files",
        "",
        f"Locust's own report: [`{FILE_PREFIX}.html`]({FILE_PREFIX}.html); its CSVs: "
        f"`{FILE_PREFIX}_stats.csv`, `{FILE_PREFIX}_stats_history.csv`, "
        f"`{FILE_PREFIX}_failures.csv`; every figure above: `{REPORT_FILE}`.",
        "",
    ]
    return "\n".join(lines)


def render_server_side(server_side: ServerSide | None) -> list[str]:
    """The server-side section: where the time went, then each panel's table."""
    lines = ["## Server side", ""]
    if server_side is None:
        return [*lines, "No Prometheus given (PROMETHEUS_URL): the server side is left out.", ""]
    if server_side.unreachable:
        return [*lines, f"Left out: {server_side.unreachable}.", ""]
    start, end = (datetime.fromtimestamp(t, UTC) for t in (server_side.start, server_side.end))
    lines += [
        f"From Prometheus at {server_side.prometheus_url}, over the run's own window "
        f"({start:%H:%M:%S} → {end:%H:%M:%S} UTC, `[{server_side.window_seconds}s]` ranges "
        "evaluated at its end): the recording rules' expressions on the raw series, not "
        "their 5-minute averages. A rate needs two scrapes inside the window; a run shorter "
        "than two scrape intervals shows -.",
        "",
        "### Where a slow p99 comes from",
        "",
    ]
    lines += _table(
        ["stage (outermost first)", "worst p99 ms"],
        [[stage, _ms(value)] for stage, value in server_side.p99_by_stage()],
    )
    lines += [
        "",
        "Each stage contains the ones below it: the model server's request time includes its "
        "batching queue and the TensorFlow run, and the gateway's call adds the network and "
        "gRPC. A p99 that the gateway has and the model server has not is the gateway's own "
        "(preprocessing, its event loop); one that the queue has and TensorFlow has not is "
        "waiting for a batch.",
        "",
    ]
    for result in server_side.panels:
        panel = result.panel
        unit = f" ({panel.unit})" if panel.unit else ""
        lines += [f"### {panel.title}{unit}", ""]
        if result.rows:
            header = [*panel.labels, *(query.column for query in panel.queries)]
            rows = [
                [*(label or NO_VALUE for label in labels), *(_value(v, panel.unit) for v in values)]
                for labels, values in result.rows
            ]
            lines += _table(header, rows)
        else:
            lines.append("No samples in the window.")
        lines += [f"- {error}" for error in result.errors]
        lines.append("")
    return lines


# --------------------------------------------------------------------------- the report


def read_run(run_dir: Path) -> dict:
    """run.json, or an empty record for a directory that has none."""
    path = run_dir / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def build_report(run_dir: Path, prometheus_url: str | None = None) -> Path:
    """Write summary.md, charts/ and report.json for a run directory; return summary.md."""
    run = read_run(run_dir)
    stats = read_request_stats(run_dir)
    history = read_history(run_dir)
    window = run_window(history, run)
    server_side = None
    if prometheus_url and window is not None:
        server_side = collect_server_side(prometheus_url, *window)
    verdict = read_verdict(run_dir, stats)
    causes = read_failure_causes(run_dir)
    exceptions = read_exceptions(run_dir)
    charts = write_charts(run_dir, history, window)
    summary = run_dir / SUMMARY_FILE
    summary.write_text(
        render_summary(
            run_dir, run, stats, verdict, causes, exceptions, charts, window, server_side
        )
    )
    report = {
        "run": run,
        "window": list(window) if window else None,
        "slo": verdict[0],
        "requests": [
            {**asdict(kind), "kind": kind.kind, "failure_ratio": kind.failure_ratio}
            for kind in stats
        ],
        "failures": [asdict(cause) for cause in causes],
        "server_side": server_side.to_json() if server_side else None,
    }
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return summary
