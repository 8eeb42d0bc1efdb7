"""Write a run directory as Locust does, with the figures a test chooses.

The headers are Locust's (2.x `--csv` and `--csv-full-history` output), so the report is
tested on the files it reads in a real run without running Locust.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

# Locust's percentile columns, in both the stats and the history files.
PERCENTILE_COLUMNS = [
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
]
STATS_HEADER = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    *PERCENTILE_COLUMNS,
]
HISTORY_HEADER = [
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    *PERCENTILE_COLUMNS,
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
]
FAILURES_HEADER = ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]
EXCEPTIONS_HEADER = ["Count", "Message", "Traceback", "Nodes"]
GRPC_NOT_FOUND = (
    "<_InactiveRpcError of RPC that terminated with:\n"
    "\tstatus = StatusCode.NOT_FOUND\n"
    '\tdetails = "Servable not found for request: Latest(nosuch)"\n'
    '\tdebug_error_string = "NOT_FOUND:Servable not found for request: Latest(nosuch)"\n>'
)


@dataclass(frozen=True)
class Kind:
    """One request kind's totals: requests, failures, req/s and p50/p95/p99 in ms."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_stats(run_dir: Path, kinds: list[Kind]) -> None:
    """locust_stats.csv with an Aggregated row summed from `kinds` (its percentiles: the max)."""
    total = Kind(
        "",
        "Aggregated",
        sum(k.requests for k in kinds),
        sum(k.failures for k in kinds),
        sum(k.rps for k in kinds),
        max(k.p50 for k in kinds),
        max(k.p95 for k in kinds),
        max(k.p99 for k in kinds),
    )
    rows = []
    for k in [*kinds, total]:
        rows.append(
            [
                k.method,
                k.name,
                k.requests,
                k.failures,
                k.p50,
                k.p50,
                1,
                k.p99 + 1,
                100,
                k.rps,
                k.rps * k.failures / max(k.requests, 1),
                k.p50,
                k.p50,
                k.p95,
                k.p95,
                k.p95,
                k.p95,
                k.p99,
                k.p99,
                k.p99,
                k.p99,
                k.p99 + 1,
            ]
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write(run_dir / "locust_stats.csv", STATS_HEADER, rows)


def write_history(
    run_dir: Path, start: int, users: list[int], totals: list[int], p99: float = 20.0
) -> None:
    """locust_stats_history.csv: the Aggregated row at start+i with users[i] and totals[i]."""
    rows = []
    for second, (user_count, total) in enumerate(zip(users, totals, strict=True)):
        percentiles = ["N/A"] * 11 if not total else [5, 6, 7, 8, 9, 10, 15, p99, p99, p99, p99]
        rows.append(
            [
                start + second,
                user_count,
                "",
                "Aggregated",
                0.0,
                0.0,
                *percentiles,
                total,
                0,
                5,
                5.0,
                1,
                p99,
                100,
            ]
        )
    _write(run_dir / "locust_stats_history.csv", HISTORY_HEADER, rows)


def write_failures(run_dir: Path, failures: list[tuple[str, str, str, int]]) -> None:
    """locust_failures.csv from (method, name, error, occurrences)."""
    rows = [[*failure, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"] for failure in failures]
    _write(run_dir / "locust_failures.csv", FAILURES_HEADER, rows)


def write_verdict(run_dir: Path, passed: bool, p95: float, p99: float, requests: int) -> None:
    """locust_slo.json as the locustfile's SLO gate writes it."""
    document = {
        "passed": passed,
        "breaches": [] if passed else [f"p99 {p99:.1f} ms > 600 ms"],
        "thresholds": {"p95_ms": 300.0, "p99_ms": 600.0, "max_failure_ratio": 0.01},
        "measured": {
            "requests": requests,
            "failures": 0,
            "p95_ms": p95,
            "p99_ms": p99,
            "failure_ratio": 0.0,
        },
    }
    (run_dir / "locust_slo.json").write_text(json.dumps(document))


JSON_PREDICT = Kind("POST", "/v1/models/mnist/predict [json]", 600, 0, 60.0, 5, 12, 20)
GRPC_PREDICT = Kind("grpc", "PredictionService/Predict", 300, 0, 30.0, 2, 4, 8)
