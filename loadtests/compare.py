"""Compare two load reports side by side: every figure of A, of B, and the ratio B/A.

`python -m loadtests compare A B` (`make load-compare A=... B=...`) reads the `report.json`
of two run directories, typically before and after a change, and prints Markdown tables:
the SLO verdicts, then req/s, p50, p95, p99 and failure ratio per request kind, then every
server-side figure both reports have. A ratio above 1 means B is higher: better for req/s,
worse for latency.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.report import REPORT_FILE

REQUEST_FIGURES = (
    ("req/s", "requests_per_second"),
    ("p50 ms", "p50_ms"),
    ("p95 ms", "p95_ms"),
    ("p99 ms", "p99_ms"),
    ("failure ratio", "failure_ratio"),
)


class ReportMissingError(FileNotFoundError):
    """A directory given to compare holds no report.json."""


def load_report(run_dir: Path) -> dict:
    """A run directory's report.json."""
    path = run_dir / REPORT_FILE
    if not path.exists():
        raise ReportMissingError(
            f"no {REPORT_FILE} in {run_dir}: give a run directory written by make load, "
            f"make load-distributed or make load-fetch (or run `python -m loadtests report "
            f"{run_dir}`)"
        )
    return json.loads(path.read_text())


def ratio(a: float | None, b: float | None) -> str:
    """B/A as "1.85x", or "-" when it has no meaning (a missing value, A = 0)."""
    if a is None or b is None or a == 0:
        return "-"
    return f"{b / a:.2f}x"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def request_rows(a: dict, b: dict) -> list[list[str]]:
    """(kind, figure, A, B, B/A) for every request kind either run made."""
    kinds_a = {row["kind"]: row for row in a["requests"]}
    kinds_b = {row["kind"]: row for row in b["requests"]}
    order = [kind for kind in kinds_a if kind in kinds_b]
    order += [kind for kind in [*kinds_a, *kinds_b] if kind not in order]
    rows = []
    for kind in dict.fromkeys(order):
        row_a, row_b = kinds_a.get(kind, {}), kinds_b.get(kind, {})
        for label, key in REQUEST_FIGURES:
            value_a, value_b = row_a.get(key), row_b.get(key)
            rows.append([kind, label, _number(value_a), _number(value_b), ratio(value_a, value_b)])
    return rows


def server_rows(a: dict, b: dict) -> list[list[str]]:
    """(panel and series, figure, A, B, B/A) for every server-side value both runs have."""
    panels_a = {p["title"]: p for p in (a.get("server_side") or {}).get("panels", [])}
    panels_b = {p["title"]: p for p in (b.get("server_side") or {}).get("panels", [])}
    rows = []
    for title, panel_a in panels_a.items():
        panel_b = panels_b.get(title)
        if panel_b is None:
            continue
        series_b = {tuple(row["labels"]): row["values"] for row in panel_b["rows"]}
        for row in panel_a["rows"]:
            values_b = series_b.get(tuple(row["labels"]))
            if values_b is None:
                continue
            labels = ", ".join(
                f"{name}={value}"
                for name, value in zip(panel_a["labels"], row["labels"], strict=True)
            )
            for column, value_a, value_b in zip(
                panel_a["columns"], row["values"], values_b, strict=True
            ):
                unit = f" {panel_a['unit']}" if panel_a["unit"] else ""
                rows.append(
                    [
                        f"{title}: {labels}",
                        f"{column}{unit}",
                        _number(value_a),
                        _number(value_b),
                        ratio(value_a, value_b),
                    ]
                )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def compare_reports(dir_a: Path, dir_b: Path) -> str:
    """The side-by-side comparison of two run directories, as Markdown."""
    a, b = load_report(dir_a), load_report(dir_b)

    def verdict(report: dict) -> str:
        return (
            "met"
            if report["slo"]["passed"]
            else "breached: " + "; ".join(report["slo"]["breaches"])
        )

    lines = [
        f"# {dir_b.name} (B) against {dir_a.name} (A)",
        "",
        f"- A: `{dir_a}`, SLO {verdict(a)}",
        f"- B: `{dir_b}`, SLO {verdict(b)}",
        "",
        "## Requests",
        "",
        *_table(["request kind", "figure", "A", "B", "B/A"], request_rows(a, b)),
        "",
    ]
    rows = server_rows(a, b)
    lines += ["## Server side", ""]
    if rows:
        lines += _table(["series", "figure", "A", "B", "B/A"], rows)
    else:
        lines.append("Not in both reports (each needs PROMETHEUS_URL when it was made).")
    return "\n".join(lines) + "\n"
