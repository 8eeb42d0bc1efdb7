"""Issue 18 end to end, real processes throughout: the rollout controller, the embedded
model server serving from the controller's config, the gateway following the Redis
record, Prometheus evaluating the project's rules, and the trainer.

1. A version trained on shuffled labels is published past a bypassed gate while load and
   feedback run: the controller shadows it, sees its accuracy collapse and rolls it back;
   clients see no error and (almost) no answer from it.
2. Users write digits in a style the served model reads poorly; their feedback labels
   them; `trainer finetune` builds a version that reads them; the controller walks it
   through shadow and canary to stable, and online accuracy rises.
3. In the middle of that rollout the controller is killed; restarted, it resumes the
   stage it was in, with its window and analysis still ahead of it.

The two tests share one stack (module scope) and each starts from whatever stable
version it finds, so either may run first.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from rollout.model_config import labels_of, parse_config
from tests.fixtures.gateway import launch_gateway
from tests.fixtures.monitoring import start_prometheus_process, stop_now
from tests.fixtures.processes import PYTHON, ManagedProcess, free_port, wait_until
from tests.fixtures.redis import launch_redis
from tests.fixtures.repository import export_version
from tests.fixtures.serving import launch_model_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "mnist"
# Windows of seconds instead of minutes: the controller's queries take them from here,
# the arithmetic is production's (the recording rules, re-windowed).
POLICY = """
model: mnist
shadow:
  enabled: true
  percent: 100
  window: 12s
  min_requests: 60
  min_agreement: 0.8
canary:
  steps: [10, 50]
  window: 12s
  min_requests: 15
checks:
  max_error_ratio_increase: 0.01
  # Four servers and the test share two cores: latency here is the machine's noise.
  max_p99_latency_ratio: 3
  p99_latency_slack: 250ms
  accuracy:
    min_feedback: 15
    max_drop: 0.05
    required: true
  drift:
    enabled: true
    min_observations: 100
    max_psi: 0.25
    max_psi_increase: 0.1
"""


@dataclass
class RolloutStack:
    """Every process of the loop, and where its files are."""

    work: Path
    repository: Path
    run_dir: Path
    log_dir: Path
    env: dict[str, str]
    gateway_url: str
    prometheus: object
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def audit_path(self) -> Path:
        return self.run_dir / "audit.jsonl"

    def start_controller(self) -> ManagedProcess:
        process = ManagedProcess(
            [PYTHON, "-m", "rollout", "run"], self.work / "rollout.log", env=self.env
        ).start()
        port = self.env["ROLLOUT_METRICS_PORT"]
        process.wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            60,
        )
        self.processes["rollout"] = process
        return process

    def state(self) -> dict:
        """The controller's state for the model, from the config it owns."""
        for line in (self.run_dir / "models.config").read_text().splitlines():
            if line.startswith("# rollout-state: "):
                return json.loads(line.split(": ", 1)[1])[MODEL]
        raise AssertionError("the config carries no rollout state")

    def audit(self) -> list[dict]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def wait_for_decision(self, version: int, decisions: set[str], timeout: float) -> dict:
        found: list[dict] = []

        def decided() -> bool:
            found[:] = [
                e for e in self.audit() if e["version"] == version and e["decision"] in decisions
            ]
            return bool(found)

        try:
            wait_until(decided, timeout, interval=0.5, message=f"{decisions} of v{version}")
        except TimeoutError:
            tail = "\n".join(json.dumps(e)[:600] for e in self.audit()[-6:])
            raise AssertionError(f"no {decisions} for v{version}; audit tail:\n{tail}") from None
        return found[0]

    def rollout_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "rollout", *args], env={**self.processes["rollout"].env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def stack(
    trained_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RolloutStack]:
    work = tmp_path_factory.mktemp("rollout-e2e")
    repository, run_dir, log_dir = work / "models", work / "run", work / "prediction-log"
    shutil.copytree(trained_repository / MODEL / "1", repository / MODEL / "1")
    policies = work / "policies"
    policies.mkdir()
    (policies / "mnist.yaml").write_text(POLICY)
    started: list = []
    try:
        redis = launch_redis(work)
        started.append(redis.process)
        prometheus_port, metrics_port = free_port(), free_port()
        env = {
            "ROLLOUT_CONFIG_PATH": str(run_dir / "models.config"),
            "ROLLOUT_MODEL_REPOSITORY": str(repository),
            "ROLLOUT_POLICIES_DIR": str(policies),
            "ROLLOUT_AUDIT_LOG": str(run_dir / "audit.jsonl"),
            "ROLLOUT_REDIS_URL": redis.url,
            "ROLLOUT_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}",
            "ROLLOUT_INTERVAL_SECONDS": "1",
            "ROLLOUT_METRICS_HOST": "127.0.0.1",
            "ROLLOUT_METRICS_PORT": str(metrics_port),
            "ROLLOUT_RECORD_PROPAGATION_SECONDS": "2",
            "ROLLOUT_GATEWAY_REQUEST_TIMEOUT_SECONDS": "5",
        }
        init = subprocess.run(
            [PYTHON, "-m", "rollout", "init-config"], env={**_os_env(), **env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        server = launch_model_server(
            work, config_file=run_dir / "models.config", model_config_file_poll_wait_seconds=1
        )
        started.append(server.process)
        env["ROLLOUT_SERVING_TARGET"] = server.grpc_target
        gateway = launch_gateway(
            work, server.grpc_target, redis_url=redis.url, log_dir=log_dir,
            rollout_refresh_seconds=0.5, request_timeout_seconds=5, max_batch_size=64,
        )  # fmt: skip
        started.append(gateway.process)
        gateway_address = gateway.url.removeprefix("http://")
        prometheus = start_prometheus_process(
            work / "prometheus",
            {"gateway": gateway_address, "rollout": f"127.0.0.1:{metrics_port}"},
            "1s",
            port=prometheus_port,
        )
        started.append(prometheus.process)
        running = RolloutStack(work, repository, run_dir, log_dir, env, gateway.url, prometheus)
        running.start_controller()
        wait_until(lambda: running.state()["stable"] == 1, 30, message="bootstrap")
        yield running
    finally:
        rollout = locals().get("running")
        if rollout is not None and "rollout" in rollout.processes:
            rollout.processes["rollout"].stop()
        for process in reversed(started):
            stop_now(process) if "prometheus" in " ".join(process.args) else process.stop()


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)


class Traffic:
    """Users of the gateway: threads that predict one digit at a time and send its true
    label back as feedback in small batches, until stopped (or a deadline passes)."""

    def __init__(self, url: str, images: np.ndarray, labels: np.ndarray, threads: int = 2):
        self.url, self.images, self.labels = url, images, labels
        self.answers: list[tuple[int, int | None]] = []  # (status, version)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, seed: int, deadline_seconds: float = 600) -> None:
        rng = np.random.default_rng(seed)
        pending: list[dict] = []
        deadline = time.monotonic() + deadline_seconds
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                index = int(rng.integers(len(self.labels)))
                try:
                    response = client.post(
                        f"/v1/models/{MODEL}/predict",
                        json={"instances": [self.images[index].round(4).tolist()]},
                    )
                except httpx.HTTPError:
                    with self._lock:
                        self.answers.append((599, None))
                    continue
                body = response.json() if response.status_code == 200 else {}
                with self._lock:
                    self.answers.append((response.status_code, body.get("version")))
                if response.status_code != 200:
                    continue
                prediction_id = body["predictions"][0]["prediction_id"]
                pending.append({"prediction_id": prediction_id, "label": int(self.labels[index])})
                if len(pending) >= 8:
                    client.post("/v1/feedback", json=pending)
                    pending = []

    def snapshot(self) -> list[tuple[int, int | None]]:
        with self._lock:
            return list(self.answers)


def accuracy_through_gateway(
    url: str, images: np.ndarray, labels: np.ndarray, version: int
) -> float:
    """Accuracy of `version` (pinned) on the images, in batches, without feedback."""
    correct = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(labels), 64):
            batch = images[start : start + 64].round(4).tolist()
            response = client.post(
                f"/v1/models/{MODEL}/predict", params={"version": version},
                json={"instances": batch},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            classes = [p["class"] for p in response.json()["predictions"]]
            correct += int(np.sum(np.array(classes) == labels[start : start + 64]))
    return correct / len(labels)


def test_a_bad_version_is_rolled_back_with_no_harm_to_clients(stack, mnist_test_images) -> None:
    images, labels = mnist_test_images
    images = images.astype(np.float32) / 255.0
    stable = stack.state()["stable"]
    with Traffic(stack.gateway_url, images, labels) as traffic:
        wait_until(lambda: len(traffic.snapshot()) > 100, 60, message="traffic")
        bad_dir = export_version(stack.repository, shuffle_labels=True, epochs=1)
        bad = int(bad_dir.name)
        entry = stack.wait_for_decision(bad, {"rollback", "promote"}, timeout=150)
        # The record stops traffic to it at once; gateways follow within a refresh.
        time.sleep(2)
        answers = traffic.snapshot()

    assert entry["decision"] == "rollback", entry["reason"]
    errors = [status for status, _ in answers if status != 200]
    assert errors == [], f"{len(errors)} failed requests: {sorted(set(errors))}"
    from_bad = sum(1 for _, version in answers if version == bad)
    assert from_bad < 0.05 * len(answers), f"{from_bad} of {len(answers)} answers from v{bad}"
    # The audit shows the evidence: the check that failed, its value and its threshold.
    failed = [c for c in entry["verdict"]["checks"] if c["status"] == "fail"]
    assert failed, entry
    assert all(c["candidate"] is not None and c["threshold"] for c in failed)
    assert any(c["name"] in ("online_accuracy", "shadow_agreement") for c in failed), failed
    assert entry["evidence"]["queries"], "the audit keeps the PromQL it decided on"
    state = stack.state()
    assert state["stable"] == stable and bad in state["rolled_back"]
    config, _ = parse_config((stack.run_dir / "models.config").read_text())
    assert labels_of(config, MODEL) == {"stable": stable}


def test_a_finetuned_version_is_promoted_and_a_killed_controller_resumes(stack) -> None:
    from trainer.styles import style_digits

    images, labels = style_digits(1400, seed=11)
    users, users_labels = images[:1000], labels[:1000]
    unseen, unseen_labels = images[1000:], labels[1000:]
    parent = stack.state()["stable"]
    parent_accuracy = accuracy_through_gateway(stack.gateway_url, unseen, unseen_labels, parent)

    # Users write hollow digits and label them; the prediction log keeps the inputs.
    with Traffic(stack.gateway_url, users, users_labels) as traffic:
        wait_until(lambda: len(traffic.snapshot()) >= 700, 120, message="labelled traffic")
    finetune = subprocess.run(
        [
            PYTHON, "-m", "trainer", "finetune", "--from-version=stable",
            f"--model-config={stack.run_dir / 'models.config'}",
            f"--log-dir={stack.log_dir}", f"--model-repository={stack.repository}",
            f"--model-name={MODEL}", "--dataset=offline", "--min-accuracy=0",
            "--max-regression=0.05",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finetune.returncode == 0, finetune.stdout + finetune.stderr
    child = max(int(p.name) for p in (stack.repository / MODEL).iterdir() if p.name.isdigit())
    metadata = json.loads(
        (stack.repository / MODEL / str(child) / "assets.extra/metadata.json").read_text()
    )
    assert metadata["parent_version"] == parent

    with Traffic(stack.gateway_url, users, users_labels):
        # 3. Killed in the middle of its canary, the controller resumes that very stage.
        wait_until(lambda: stack.state()["stage"] == "canary", 120, interval=0.2,
                   message="canary")  # fmt: skip
        stack.processes["rollout"].signal(signal.SIGKILL)
        stack.processes["rollout"].stop()
        before = stack.state()
        killed_at = time.time()
        stack.start_controller()
        wait_until(
            lambda: any(e["time"] > killed_at for e in stack.audit()), 60, message="a decision"
        )
        after = [e for e in stack.audit() if e["time"] > killed_at and e["version"] == child]
        assert after, "the restarted controller decided nothing about the candidate"
        assert after[0]["decision"] in ("wait", "canary", "promote"), after[0]
        assert (after[0]["stage"], after[0]["step"]) >= (before["stage"], before["step"])
        assert not [e for e in after if e["decision"] in ("seen", "shadow")], "restarted from zero"
        resumed = stack.state()
        if (resumed["stage"], resumed["step"]) == (before["stage"], before["step"]):
            assert resumed["stage_started"] == before["stage_started"], "the window restarted"

        # 2. Every check passes over each window: shadow, canary steps, then stable.
        promoted = stack.wait_for_decision(child, {"promote", "rollback"}, timeout=180)
        assert promoted["decision"] == "promote", promoted["reason"]
        wait_until(lambda: len(stack.prometheus.query(
            f'model_version:gateway_online_accuracy:ratio_rate5m{{version="{child}"}}')) == 1,
            30, message="the child's online accuracy")  # fmt: skip

    decisions = [e["decision"] for e in stack.audit() if e["version"] == child]
    assert decisions.count("canary") == 2 and "shadow" in decisions, decisions
    assert stack.state()["stable"] == child
    child_accuracy = accuracy_through_gateway(stack.gateway_url, unseen, unseen_labels, child)
    assert child_accuracy > parent_accuracy + 0.1, (parent_accuracy, child_accuracy)
    # Online accuracy, as the dashboard's recording rule has it, rose with the new version.
    online = {
        int(s["metric"]["version"]): float(s["value"][1])
        for s in stack.prometheus.query("model_version:gateway_online_accuracy:ratio_rate5m")
    }
    assert online[child] > online[parent], online
