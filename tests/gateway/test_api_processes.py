"""Behaviours that need a gateway (or model server) of their own.

- API keys (401/403) and an unmeetable deadline (504) against the session model server;
- readiness and 503s while the model server is down, then recovery once it comes up;
- the canary split's proportions, over a server whose config labels two versions.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.processes import PYTHON, ManagedProcess, free_port, wait_until
from tests.fixtures.serving import health_status

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/mnist/predict"
ONE_INSTANCE = {"instances": [np.full((28, 28), 0.5).tolist()]}

LABELLED_CONFIG = """
model_config_list {{
  config {{
    name: "mnist"
    base_path: "{base_path}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""


def test_api_keys(model_server, start_gateway) -> None:
    gateway = start_gateway(model_server.grpc_target, api_keys="key-one,key-two")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        missing = client.post(PREDICT, json=ONE_INSTANCE)
        wrong = client.post(PREDICT, json=ONE_INSTANCE, headers={"X-API-Key": "nope"})
        right = client.post(PREDICT, json=ONE_INSTANCE, headers={"X-API-Key": "key-two"})
        bearer = client.get("/v1/models", headers={"Authorization": "Bearer key-one"})
        feedback = client.post("/v1/feedback", json={"prediction_id": "x.y", "label": 1})
        probes = [client.get(path).status_code for path in ("/healthz", "/readyz", "/metrics")]

    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert right.status_code == 200 and bearer.status_code == 200
    assert feedback.status_code == 401
    assert probes == [200, 200, 200], "probes and scrapes need no key"


def test_deadline_passing_is_504(model_server, start_gateway) -> None:
    gateway = start_gateway(model_server.grpc_target, request_timeout_seconds=0.5)
    connected = httpx.post(gateway.url + PREDICT, json=ONE_INSTANCE, timeout=10)
    assert connected.status_code == 200
    # A frozen server keeps its connection open and answers nothing, so the deadline must
    # pass (a tiny deadline instead would race a fast server: gRPC checks it at ms grain).
    model_server.process.signal(signal.SIGSTOP)
    try:
        response = httpx.post(gateway.url + PREDICT, json=ONE_INSTANCE, timeout=10)
    finally:
        model_server.process.signal(signal.SIGCONT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_production_refuses_the_placeholder_secret(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "GATEWAY_ENV": "production",
        "GATEWAY_FEEDBACK_SECRET": "change-me",
        "GATEWAY_PORT": str(port),
        "GATEWAY_HOST": "127.0.0.1",
    }
    process = ManagedProcess([PYTHON, "-m", "gateway"], tmp_path / "gw.log", env=env).start()
    assert process.process.wait(30) == 2
    assert "GATEWAY_FEEDBACK_SECRET" in process.log_tail()


@pytest.fixture(scope="module")
def labelled_repository(trained_repository: Path, tmp_path_factory) -> Path:
    """Versions 1 and 2 (the same weights: the test is about routing, not models)."""
    repository = tmp_path_factory.mktemp("labelled")
    shutil.copytree(trained_repository / "mnist" / "1", repository / "mnist" / "1")
    shutil.copytree(trained_repository / "mnist" / "1", repository / "mnist" / "2")
    config = repository / "models.config"
    config.write_text(LABELLED_CONFIG.format(base_path=repository / "mnist"))
    return repository


class LateServer:
    """A model server on a port chosen up front, started only when a test asks."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.process = ManagedProcess(
            [
                PYTHON,
                "-m",
                "serving",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--bind_address=127.0.0.1",
                f"--model_config_file={config}",
            ],
            log_dir / "late-model-server.log",
            env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
        )

    def ensure_started(self) -> None:
        if self.process.process is None:
            self.process.start()
            self.process.wait_ready(lambda: health_status(self.target) == "SERVING", 120)


@pytest.fixture(scope="module")
def late_server(labelled_repository: Path, tmp_path_factory):
    server = LateServer(labelled_repository / "models.config", tmp_path_factory.mktemp("late"))
    yield server
    server.process.stop()


def test_readiness_while_the_model_server_is_down_then_up(late_server, start_gateway) -> None:
    # Runs before the canary test in this module, while late_server is still down.
    assert late_server.process.process is None, "run this module in file order"
    gateway = start_gateway(late_server.target, wait="healthy")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        not_ready = client.get("/readyz")
        unavailable = client.post(PREDICT, json=ONE_INSTANCE)
        assert not_ready.status_code == 503 and not_ready.headers["retry-after"]
        assert not_ready.json()["error"]["code"] == "not_ready"
        assert unavailable.status_code == 503 and unavailable.headers["retry-after"]
        assert unavailable.json()["error"]["code"] == "upstream_unavailable"

        late_server.ensure_started()
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, 0.2, "readyz after start")
        assert client.post(PREDICT, json=ONE_INSTANCE).status_code == 200


def test_canary_split_proportions(late_server, start_gateway) -> None:
    late_server.ensure_started()
    gateway = start_gateway(late_server.target, canary_percent=25)
    requests = 400
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        versions = [
            client.post(PREDICT, json=ONE_INSTANCE).json()["version"] for _ in range(requests)
        ]
        pinned_stable = {
            client.post(f"{PREDICT}?label=stable", json=ONE_INSTANCE).json()["version"]
            for _ in range(20)
        }
        pinned_version = client.post(f"{PREDICT}?version=2", json=ONE_INSTANCE).json()["version"]
        pinned_canary = client.post(f"{PREDICT}?label=canary", json=ONE_INSTANCE).json()["version"]
        metrics = client.get("/metrics").text
        # What the web page's status strip shows: each label and the version it names.
        labels = client.get("/v1/models/mnist").json()["labels"]

    assert set(versions) == {1, 2}
    canary_share = versions.count(2) / requests
    # Binomial(400, 0.25): sd 2.2 points; 8 points is ~3.7 sd, a flake every ~5,000 runs.
    assert abs(canary_share - 0.25) <= 0.08, f"canary got {canary_share:.1%}"
    assert pinned_stable == {1} and pinned_version == 2 and pinned_canary == 2
    assert labels == {"canary": 2, "stable": 1}
    # The canary-vs-stable rules join on this gauge to tell the two versions apart.
    assert 'gateway_version_label_info{label="stable",model="mnist",version="1"} 1.0' in metrics
    assert 'gateway_version_label_info{label="canary",model="mnist",version="2"} 1.0' in metrics
