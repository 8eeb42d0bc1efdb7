"""The report of a run, from files in Locust's own formats: summary, causes, verdict, charts."""

from __future__ import annotations

import json

import pytest

from loadtests.report import (
    build_report,
    describe_cause,
    moving_rate,
    read_failure_causes,
    read_history,
)

from .report_files import (
    GRPC_NOT_FOUND,
    GRPC_PREDICT,
    JSON_PREDICT,
    write_failures,
    write_history,
    write_stats,
    write_verdict,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    """A finished two-kind run of 10 s: stats, history, one failure cause, a met verdict."""
    directory = tmp_path / "run"
    write_stats(directory, [JSON_PREDICT, GRPC_PREDICT])
    users = [0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 0]
    write_history(directory, 1_800_000_000, users, [0, *(90 * i for i in range(1, 12))])
    write_failures(directory, [])
    write_verdict(directory, passed=True, p95=12, p99=20, requests=900)
    return directory


def test_summary_has_the_verdict_and_each_kind_with_its_figures(run_dir):
    summary = build_report(run_dir).read_text()

    assert "## SLO verdict: met" in summary
    assert "| p99 latency | ≤ 600 ms | 20.0 ms | met |" in summary
    json_row = "| POST /v1/models/mnist/predict [json] | 600 | 0 | 60.0 | 5.0 | 12.0 | 20.0 |"
    assert json_row in summary
    assert "| grpc PredictionService/Predict | 300 | 0 | 30.0 | 2.0 | 4.0 | 8.0 |" in summary
    assert "| **all requests** | 900 | 0 | 90.0 |" in summary
    assert "## Failures by cause\n\nNone." in summary
    assert "No Prometheus given (PROMETHEUS_URL)" in summary
    report = json.loads((run_dir / "report.json").read_text())
    assert report["slo"]["passed"] is True
    assert [row["kind"] for row in report["requests"]][-1] == "Aggregated"


def test_charts_are_pngs_of_the_run_window(run_dir):
    build_report(run_dir)

    for chart in ("throughput", "latency", "users"):
        assert (run_dir / "charts" / f"{chart}.png").read_bytes().startswith(PNG_MAGIC), chart
    assert "![throughput](charts/throughput.png)" in (run_dir / "summary.md").read_text()
    window = json.loads((run_dir / "report.json").read_text())["window"]
    assert window == [1_800_000_000, 1_800_000_011]  # first second with users - 1, last row


def test_a_breached_verdict_names_the_objective(tmp_path):
    directory = tmp_path / "run"
    write_stats(directory, [JSON_PREDICT])
    write_verdict(directory, passed=False, p95=250, p99=900, requests=600)

    summary = build_report(directory).read_text()

    assert "## SLO verdict: breached" in summary
    assert "| p99 latency | ≤ 600 ms | 900.0 ms | breached |" in summary
    assert "| p95 latency | ≤ 300 ms | 250.0 ms | met |" in summary


def test_without_the_gate_file_the_verdict_comes_from_the_stats(tmp_path, monkeypatch):
    """A run fetched from an in-cluster master, which has not exited, has no locust_slo.json."""
    directory = tmp_path / "run"
    write_stats(directory, [JSON_PREDICT])
    monkeypatch.setenv("SLO_P99_MS", "15")

    summary = build_report(directory).read_text()

    assert "## SLO verdict: breached" in summary
    assert "| p99 latency | ≤ 15 ms | 20.0 ms | breached |" in summary
    assert "Verdict from the stats CSV, with this environment's SLO_* thresholds." in summary


def test_failures_are_grouped_by_cause_across_request_kinds(tmp_path):
    not_found = 'CatchResponseError(\'HTTP 404: {"error":{"code":"model_not_found"}}\')'
    write_failures(
        tmp_path,
        [
            ("POST", "/v1/models/nosuch/predict [json]", not_found, 10),
            ("POST", "/v1/models/nosuch/predict [b64]", not_found, 4),
            ("grpc", "PredictionService/Predict", GRPC_NOT_FOUND, 20),
        ],
    )

    causes = read_failure_causes(tmp_path)

    assert [(c.cause, c.occurrences) for c in causes] == [
        ("gRPC NOT_FOUND: Servable not found for request: Latest(nosuch)", 20),
        ('HTTP 404: {"error":{"code":"model_not_found"}}', 14),
    ]
    assert causes[1].kinds == (
        "POST /v1/models/nosuch/predict [b64]",
        "POST /v1/models/nosuch/predict [json]",
    )


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ("CatchResponseError('HTTP 503')", "HTTP 503"),
        (
            "ConnectionRefusedError(111, 'Connection refused')",
            "ConnectionRefusedError(111, 'Connection refused')",
        ),
        ("expected 1 predictions, got 0", "expected 1 predictions, got 0"),
        ("x" * 500, "x" * 159 + "…"),
    ],
)
def test_causes_are_one_short_line(error, cause):
    assert describe_cause(error) == cause


def test_moving_rate_reads_the_rate_through_worker_report_steps(tmp_path):
    # A distributed master's totals move every 3 s (worker reports): 30 requests a step.
    totals = [30 * (second // 3) for second in range(1, 19)]
    write_history(tmp_path, 1_800_000_000, [4] * len(totals), totals)

    _, requests, failures = moving_rate(read_history(tmp_path))

    # Per-second differences would read 0, 0, 30, 0, 0, 30...; the window reads 10 each time.
    assert requests and all(rate == pytest.approx(10.0) for rate in requests), requests
    assert not any(failures)


def test_an_unreachable_prometheus_is_reported_not_fatal(run_dir):
    from tests.fixtures.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"

    summary = build_report(run_dir, prometheus_url=url).read_text()

    assert f"Left out: Prometheus at {url} did not answer" in summary
    assert json.loads((run_dir / "report.json").read_text())["server_side"]["unreachable"]
