"""The in-cluster Locust, run here: the master and worker exactly as k8s/components/loadtest
starts them (their args, the locust-config ConfigMap), against the no-op target. The master
starts the run once its worker connects, stays up after it with its web UI on loopback, and
`python -m loadtests fetch` turns what the UI serves into the same report a local run has.
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from loadtests.noop_target import target_command
from loadtests.run import LOCUSTFILE, without_run_settings
from tests.fixtures.processes import PYTHON, REPO_ROOT, free_port, wait_until
from tests.k8s.manifests import load_all, one, pod_template

pytestmark = pytest.mark.slow

COMPONENT = REPO_ROOT / "k8s" / "components" / "loadtest"


@pytest.fixture(scope="module")
def component() -> list[dict]:
    """The component's objects, rendered as `kubectl apply -k` renders them."""
    from tests.k8s.manifests import kubectl, render

    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize component)")
    return load_all(render(COMPONENT))


def container(objects: list[dict], name: str) -> dict:
    return pod_template(one(objects, "Deployment", name))["spec"]["containers"][0]


def rewrite(args: list[str], replacements: dict[str, str]) -> list[str]:
    """Replace the value of each `--flag=value` named in `replacements`."""
    rewritten = []
    for arg in args:
        flag = arg.split("=", 1)[0]
        rewritten.append(f"{flag}={replacements[flag]}" if flag in replacements else arg)
    return rewritten


def test_the_cluster_master_runs_by_itself_and_its_run_can_be_fetched(
    tmp_path, component, process_factory
):
    http_port, grpc_port = free_port(), free_port()
    target = process_factory(target_command(http_port, grpc_port), "noop_target")
    target.wait_ready(
        lambda: httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).is_success, 30
    )
    config = one(component, "ConfigMap", "locust-config")["data"]
    env = {
        **without_run_settings(os.environ),
        **config,
        # This machine instead of the cluster's Services, and a short run.
        "LOCUST_LOCUSTFILE": str(LOCUSTFILE),
        "LOCUST_HOST": f"http://127.0.0.1:{http_port}",
        "LOAD_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        "LOCUST_USERS": "5",
        "LOCUST_SPAWN_RATE": "5",
        "LOCUST_RUN_TIME": "4s",
        "LOCUST_EXPECT_WORKERS": "1",
        "LOAD_SAMPLE_SIZE": "50",
    }
    master_port, web_port = free_port(), free_port()
    master_args = rewrite(
        container(component, "locust-master")["args"],
        {
            "--master-bind-port": str(master_port),
            "--web-port": str(web_port),
            "--csv": str(tmp_path / "master" / "locust"),
        },
    )
    master = process_factory(
        [PYTHON, "-m", "locust", *master_args, "--master-bind-host=127.0.0.1"], "master", env
    )
    worker_args = rewrite(
        container(component, "locust-worker")["args"],
        {"--master-host": "127.0.0.1", "--master-port": str(master_port)},
    )
    process_factory([PYTHON, "-m", "locust", *worker_args], "worker", env)
    ui = f"http://127.0.0.1:{web_port}"

    def run_over() -> bool:
        # "ready" before the run, "running" during it, "stopped" once its run time is up.
        return httpx.get(f"{ui}/stats/requests", timeout=5).json()["state"] == "stopped"

    wait_until(run_over, timeout=90, interval=0.5, message="the autostarted run to end")
    assert master.alive(), master.log_tail()  # it stays up for the report to be fetched
    fetched = subprocess.run(
        [
            PYTHON,
            "-m",
            "loadtests",
            "fetch",
            "--locust-url",
            ui,
            "--reports-dir",
            str(tmp_path),
            "--run-name",
            "fetched",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    run_dir = tmp_path / "fetched"
    report = json.loads((run_dir / "report.json").read_text())
    kinds = {row["kind"]: row for row in report["requests"]}
    assert kinds["Aggregated"]["requests"] > 0 and kinds["Aggregated"]["failures"] == 0, kinds
    for kind in (
        "POST /v1/models/mnist/predict [json]",
        "POST /v1/models/mnist/predict/image [png multipart]",
        "GET /v1/models/mnist",
        "grpc PredictionService/Predict",
    ):
        assert kinds[kind]["requests"] > 0, kinds
    assert report["slo"]["passed"], report["slo"]
    assert report["run"]["source"] == f"Locust master at {ui}"
    summary = (run_dir / "summary.md").read_text()
    assert "Verdict from the stats CSV" in summary
    assert (run_dir / "charts" / "throughput.png").exists()
    assert "<html" in (run_dir / "locust.html").read_text().lower()
