"""`make load-distributed WORKERS=2` against the live stack: a master and two real Locust
workers pass the SLO gate, and the run's report holds its charts and the server side from a
real Prometheus over the run's window."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from loadtests.run import without_run_settings
from tests.fixtures.processes import REPO_ROOT, free_port

from .locust_runs import ALL_WEIGHTS_ZERO

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_load_distributed(
    reports_dir, gateway, model_server, prometheus_url: str, **variables: str
) -> subprocess.CompletedProcess:
    """`make load-distributed` as a person runs it, with this session's servers."""
    # Nor the outer make's flags (make test runs this): this make starts afresh.
    env = {
        key: value
        for key, value in without_run_settings(os.environ).items()
        if not key.startswith(("MAKE", "MFLAGS"))
    }
    env.update(
        {
            **{weight: "1" for weight in ALL_WEIGHTS_ZERO},  # every user type
            "LOAD_GRPC_TARGET": model_server.grpc_target,
            "LOAD_SPLIT_SEED": "7",  # the fixture model's held-out digits
            "LOAD_SAMPLE_SIZE": "100",
            "LOAD_FEEDBACK_SHARE": "0.5",
        }
    )
    settings = {
        "LOAD_HOST": gateway.url,
        "LOAD_USERS": "6",
        "LOAD_SPAWN_RATE": "6",
        "LOAD_RUN_TIME": "8s",
        "REPORTS_DIR": str(reports_dir),
        "LOAD_RUN": "run",
        "LOCUST_MASTER_PORT": str(free_port()),
        "PROMETHEUS_URL": prometheus_url,
        **variables,
    }
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "load-distributed",
            *(f"{name}={value}" for name, value in settings.items()),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_two_workers_pass_the_slo_gate_and_report_both_sides(
    tmp_path, gateway, model_server, stack_prometheus
):
    completed = make_load_distributed(
        tmp_path, gateway, model_server, stack_prometheus.url, WORKERS="2"
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    # Locust's own engine: one master, two worker processes that both got users.
    assert "2 workers connected" in output, output[-3000:]
    assert "to 2 ready workers" in output
    assert "SLO met: p95" in output
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["run"]["workers"] == 2 and report["run"]["exit_code"] == 0
    assert report["slo"]["passed"], report["slo"]
    kinds = {row["kind"]: row for row in report["requests"]}
    for kind in ("POST /v1/models/mnist/predict [json]", "grpc PredictionService/Predict"):
        assert kinds[kind]["requests"] > 0, kinds
    assert (run_dir / "locust.html").read_text().count("PredictionService/Predict") > 0
    for chart in ("throughput", "latency", "users"):
        assert (run_dir / "charts" / f"{chart}.png").read_bytes().startswith(PNG_MAGIC)

    server = report["server_side"]
    assert server and not server["unreachable"], server
    panels = {panel["title"]: panel for panel in server["panels"]}
    routes = {
        row["labels"][0]: row["values"] for row in panels["Gateway, end to end, by route"]["rows"]
    }
    assert routes["/v1/models/{model}/predict"][2] is not None, routes  # a p99, in ms
    model_server_rows = panels["Model server, whole request, by API"]["rows"]
    assert any(row["values"][2] for row in model_server_rows), model_server_rows
    # Every process of the stack exports its CPU and memory; both show up for the run.
    processes = {
        row["labels"][0]: row["values"] for row in panels["CPU and memory of each process"]["rows"]
    }
    for job in ("gateway", "model-server"):
        cpu_cores, peak_rss_mib = processes[job]
        assert cpu_cores > 0 and peak_rss_mib > 10, processes
    summary = (run_dir / "summary.md").read_text()
    assert "## SLO verdict: met" in summary
    assert "### Where a slow p99 comes from" in summary
    assert "![throughput](charts/throughput.png)" in summary


def test_the_master_exit_code_carries_a_breached_slo(
    tmp_path, gateway, model_server, stack_prometheus
):
    completed = make_load_distributed(
        tmp_path,
        gateway,
        model_server,
        "",  # no server side: this test is about the verdict
        WORKERS="1",
        LOAD_RUN_TIME="4s",
        LOCUST_ARGS="--slo-p99-ms 0.001",
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["run"]["exit_code"] == 1
    assert not report["slo"]["passed"]
    assert "SLO breached: p99" in output
    assert "## SLO verdict: breached" in (tmp_path / "run" / "summary.md").read_text()
