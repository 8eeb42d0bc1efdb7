"""`make up` / demo / `make down` for real: scripts/stack.py on free ports and a temp run
directory, serving the fixture model, then scripts/demo.py through the gateway."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import PYTHON, REPO_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(
    *args: str, timeout: float = 240, env_from: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run PYTHON with `args`; `env_from`: a run directory whose rollout settings apply."""
    env = None
    if env_from is not None:
        env = {**os.environ, "ROLLOUT_CONFIG_PATH": str(env_from / "models.config")}
    return subprocess.run(
        [PYTHON, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_demo_down(trained_repository: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    gateway_port = free_port()
    pushgateway_port = free_port()
    stack = [
        "scripts/stack.py",
        f"--run-dir={run_dir}",
        f"--model-repository={trained_repository}",
        f"--grpc-port={free_port()}",
        f"--rest-port={free_port()}",
        f"--gateway-port={gateway_port}",
        f"--prometheus-port={free_port()}",
        f"--pushgateway-port={pushgateway_port}",
        f"--redis-port={free_port()}",
        f"--rollout-metrics-port={free_port()}",
        f"--log-dir={tmp_path / 'prediction_log'}",
    ]
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    try:
        up = run(*stack[:1], "up", *stack[1:])
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"{gateway_url}  (API docs: {gateway_url}/docs)" in up.stdout
        assert f"web page            {gateway_url}/  " in up.stdout
        page = httpx.get(f"{gateway_url}/")
        assert page.status_code == 200 and '<canvas id="pad"' in page.text
        pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
        # Redis, Prometheus and the Pushgateway join when their binaries are installed.
        assert {"model-server", "gateway", "rollout"} <= set(pids)
        # The model server serves from the controller's config: the fixture's version 1
        # is stable, and `rollout status` says so.
        assert 'key: "stable"' in (run_dir / "models.config").read_text()
        rollout = run("-m", "rollout", "status", env_from=run_dir)
        assert rollout.returncode == 0, rollout.stdout + rollout.stderr
        assert "stable      version 1" in rollout.stdout
        ready = httpx.get(f"{gateway_url}/readyz").json()
        if shutil.which("redis-server"):
            assert "redis" in pids and ready["feedback_dedup"] == "redis", ready
        assert (run_dir / "gateway.log").exists() and (run_dir / "model-server.log").exists()
        assert httpx.get(f"{gateway_url}/readyz").status_code == 200
        if "pushgateway" in pids:
            # The model trained before the stack ran has its offline accuracy pushed.
            pushed = httpx.get(f"http://127.0.0.1:{pushgateway_port}/metrics").text
            assert (
                'trainer_eval_accuracy{instance="",job="trainer",model="mnist",version="1"}'
                in pushed
            )

        again = run(*stack[:1], "up", *stack[1:])
        assert again.returncode == 0
        assert again.stdout.count("already running") == len(pids)

        demo = run("scripts/demo.py", f"--gateway-url={gateway_url}", "--count=6")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        rows = [line for line in demo.stdout.splitlines() if re.match(r"^\s*\d+\s+\d\s+\d\s", line)]
        assert len(rows) == 6, demo.stdout
        assert "feedback sent" in demo.stdout
        assert f"open {gateway_url}/ to draw a digit" in demo.stdout
        if "prometheus" in pids:
            # The page's status strip reads online accuracy from the stack's Prometheus.
            accuracy = httpx.get(f"{gateway_url}/v1/models/mnist/accuracy").json()
            assert accuracy["status"] == "ok", accuracy
        # The demo's feedback was recorded: the same ids again are duplicates, not counted.
        again = run("scripts/demo.py", f"--gateway-url={gateway_url}", "--count=6", "--replay")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "sent again: 409 duplicate_feedback" in again.stdout, again.stdout

        # The demo left a prediction log, and the trainer reads it: two runs of 12
        # predictions (6 as arrays, 6 as PNGs) with their inputs, and 6 labels each (the
        # replayed duplicates are not logged).
        summary = run("-m", "trainer", "log", "summary", f"--log-dir={tmp_path / 'prediction_log'}")
        assert summary.returncode == 0, summary.stdout + summary.stderr
        row = next(line for line in summary.stdout.splitlines() if line.startswith("mnist "))
        assert row.split()[2:5] == ["24", "24", "12"], summary.stdout
        assert "skipped" not in summary.stdout

        status = run(*stack[:1], "status", *stack[1:])
        assert status.returncode == 0 and status.stdout.count(" ready ") == len(pids)
    finally:
        down = run(*stack[:1], "down", *stack[1:])
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list(run_dir.glob("*.pid"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{gateway_url}/healthz", timeout=2)


def test_status_on_a_fresh_checkout_reports_and_writes_nothing(tmp_path: Path) -> None:
    """Issue 15: `make status` crashed (FileNotFoundError) writing the feedback secret."""
    run_dir = tmp_path / "never-started"
    status = run("scripts/stack.py", f"--run-dir={run_dir}", "status", timeout=60)
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
    assert "gateway" in status.stdout and "down" in status.stdout
    assert not run_dir.exists()
