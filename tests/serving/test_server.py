"""Server behaviour beyond one request: health, config reload, REST timeout, SIGTERM drain.

Runs on the shared `multi_model_server` (see conftest). The drain test stops that server,
so it is the last test to use it (this file runs after test_lifecycle.py).
"""

from __future__ import annotations

import signal

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tests.fixtures.processes import wait_until
from tests.fixtures.serving import ModelServer, health_status
from tests.serving.helpers import metric_value, predict_request, server_config

pytestmark = pytest.mark.slow


def _reload(server: ModelServer, config) -> None:
    from tensorflow_serving.apis import model_management_pb2

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest(config=config)
        stub.HandleReloadConfigRequest(request, timeout=120)


def _version_for(server: ModelServer, label: str) -> int:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request(np.zeros((1, 28, 28), np.float32), label=label)
        return stub.Predict(request, timeout=30).model_spec.version.value


def test_model_server_fixture_serves_the_trained_repository(model_server):
    """The fixture other components' tests use: version 1 of the trainer's export."""
    assert model_server.base_path is not None and (model_server.base_path / "1").is_dir()
    body = httpx.get(f"{model_server.rest_url}/v1/models/mnist", timeout=10).json()
    assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [
        ("1", "AVAILABLE")
    ]
    assert health_status(model_server.grpc_target) == "SERVING"
    assert httpx.get(model_server.metrics_url, timeout=10).status_code == 200


def test_health_is_serving_per_model_and_overall(multi_model_server):
    model_server, _ = multi_model_server
    assert health_status(model_server.grpc_target) == "SERVING"
    assert health_status(model_server.grpc_target, "mnist") == "SERVING"
    with pytest.raises(grpc.RpcError) as caught:
        health_status(model_server.grpc_target, "no-such-model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reload_moves_a_label(multi_model_server):
    model_server, root = multi_model_server
    assert _version_for(model_server, "stable") == 1
    _reload(model_server, server_config(root, {"stable": 2}))
    assert _version_for(model_server, "stable") == 2


def test_reload_refuses_a_label_on_an_unavailable_version(multi_model_server):
    model_server, root = multi_model_server
    with pytest.raises(grpc.RpcError) as caught:
        _reload(model_server, server_config(root, {"stable": 9}))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 9 of model mnist" in caught.value.details()
    assert _version_for(model_server, "stable") == 2  # the previous labels stay


def test_edited_config_file_is_applied_at_the_next_poll(multi_model_server):
    from google.protobuf import text_format

    model_server, root = multi_model_server
    assert _version_for(model_server, "stable") == 2  # moved by the reload test
    config = server_config(root, {"stable": 1, "canary": 2})
    (root / "models.config").write_text(text_format.MessageToString(config))
    wait_until(lambda: _version_for(model_server, "stable") == 1, 30, message="file re-read")
    assert _version_for(model_server, "canary") == 2


def test_health_needs_every_configured_model_available(multi_model_server, tmp_path):
    model_server, root = multi_model_server
    empty = tmp_path / "empty_model"
    empty.mkdir()
    _reload(model_server, server_config(root, {"stable": 2}, {"empty": empty}))
    assert health_status(model_server.grpc_target) == "NOT_SERVING"
    assert health_status(model_server.grpc_target, "empty") == "NOT_SERVING"
    assert health_status(model_server.grpc_target, "mnist") == "SERVING"
    _reload(model_server, server_config(root, {"stable": 2}))
    assert health_status(model_server.grpc_target) == "SERVING"


def test_rest_request_over_the_timeout_is_504(multi_model_server):
    model_server, _ = multi_model_server
    response = httpx.post(
        f"{model_server.rest_url}/v1/models/spin:predict",
        json={"inputs": {"iterations": 20000}},  # ~0.5 s of matrix products; limit 50 ms
        timeout=30,
    )
    assert response.status_code == 504, response.text
    assert response.json()["error"]


def test_sigterm_finishes_in_flight_requests_then_exits(multi_model_server):
    model_server, _ = multi_model_server
    channel = grpc.insecure_channel(model_server.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(np.array(40000, np.int32), name="spin", alias="iterations")
    calls = [stub.Predict.future(request, timeout=120) for _ in range(3)]

    def inflight() -> float:
        text = httpx.get(model_server.metrics_url, timeout=5).text
        name = ":tensorflow:serving:embedded:inflight_requests"
        return metric_value(text, name, model_name="spin")

    wait_until(lambda: inflight() == 3, 60, message="3 spin requests in flight")
    model_server.process.signal(signal.SIGTERM)
    for call in calls:
        response = call.result()  # raises if the server dropped the request
        assert response.model_spec.name == "spin"
    assert model_server.process.process.wait(60) == 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("model_config_list { bogus: 1 }", "no field named"),
        ("model_config_list { config { name: 'a' } }", "no base_path"),
    ],
)
def test_invalid_config_exits_1_before_loading_anything(tmp_path, config_text, message):
    import subprocess
    import sys

    config = tmp_path / "models.config"
    config.write_text(config_text)
    result = subprocess.run(
        [sys.executable, "-m", "serving", f"--model_config_file={config}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr
