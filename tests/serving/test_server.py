"""The `python -m serving` process: health, config polling, flags, SIGTERM drain, refusals.

Each test starts the server it needs (no test depends on another's leftovers); everything
that can be checked in-process is checked in test_core.py and tests/serving/protocol/.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.fixtures.processes import wait_until
from tests.fixtures.serving import ModelServer, health_status
from tests.serving.helpers import (
    build_spin_model,
    metric_value,
    model_config,
    predict_request,
    publish_copy,
)

pytestmark = pytest.mark.slow


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


def test_health_follows_every_configured_model(start_model_server, trained_repository, tmp_path):
    mnist, empty = tmp_path / "mnist", tmp_path / "empty"
    publish_copy(trained_repository / "mnist" / "1", mnist, 1)
    empty.mkdir()
    config_file = tmp_path / "models.config"
    config_file.write_text(
        text_format.MessageToString(model_config(("mnist", mnist), ("empty", empty)))
    )
    server = start_model_server(
        config_file=config_file, wait="listening", file_system_poll_wait_seconds=1
    )
    target = server.grpc_target
    # TF Serving's health names follow the whole server; each model name its own versions.
    for service in ("", "tensorflow.serving.PredictionService", "ModelService"):
        assert health_status(target, service) == "NOT_SERVING"
    assert health_status(target, "mnist") == "SERVING"
    assert health_status(target, "empty") == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as caught:
        health_status(target, "no-such-model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    publish_copy(trained_repository / "mnist" / "1", empty, 1)
    wait_until(lambda: health_status(target) == "SERVING", 60, message="every model available")
    for service in ("tensorflow.serving.ModelService", "PredictionService", "empty"):
        assert health_status(target, service) == "SERVING"


def test_labels_move_by_reload_call_and_by_the_polled_config_file(
    start_model_server, trained_repository, tmp_path
):
    model_dir = tmp_path / "mnist"
    for version in (1, 2):
        publish_copy(trained_repository / "mnist" / "1", model_dir, version)
    config_file = tmp_path / "models.config"
    config_file.write_text(
        text_format.MessageToString(model_config(("mnist", model_dir), num_versions=2, stable=1))
    )
    server = start_model_server(config_file=config_file, model_config_file_poll_wait_seconds=1)
    assert _version_for(server, "stable") == 1
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        refused = model_config(("mnist", model_dir), num_versions=2, stable=9)
        with pytest.raises(grpc.RpcError) as caught:
            stub.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=refused), timeout=60
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 9 of model mnist" in caught.value.details()
        assert _version_for(server, "stable") == 1  # the previous labels stay
        moved = model_config(("mnist", model_dir), num_versions=2, stable=2)
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=moved), timeout=60
        )
        assert response.status.error_code == 0
    assert _version_for(server, "stable") == 2
    config_file.write_text(
        text_format.MessageToString(
            model_config(("mnist", model_dir), num_versions=2, stable=1, canary=2)
        )
    )
    wait_until(lambda: _version_for(server, "canary") == 2, 30, message="file re-read")
    assert _version_for(server, "stable") == 1


def test_flags_tf_serving_has_are_accepted_and_unknown_ones_reported(
    start_model_server, model_server
):
    server = start_model_server(
        base_path=model_server.base_path,
        rest_api_num_threads=4,
        enable_grpc_healthcheck_service=True,
        grpc_channel_arguments="grpc.max_connection_age_ms=600000",
        no_such_flag=1,
    )
    assert health_status(server.grpc_target) == "SERVING"
    log = server.process.log_path.read_text()
    assert "unknown argument: --no_such_flag=1" in log
    assert "--rest_api_num_threads is accepted for compatibility but has no effect" in log


def test_sigterm_finishes_in_flight_requests_then_exits(start_model_server, tmp_path):
    build_spin_model(tmp_path / "spin" / "1")
    server = start_model_server(
        base_path=tmp_path / "spin",
        model_name="spin",
        monitoring_config_file=Path(__file__).parents[2]
        / "serving"
        / "config"
        / "monitoring.config",
    )
    channel = grpc.insecure_channel(server.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(np.array(40000, np.int32), name="spin", alias="iterations")
    calls = [stub.Predict.future(request, timeout=120) for _ in range(3)]

    def inflight() -> float:
        text = httpx.get(server.metrics_url, timeout=5).text
        return metric_value(
            text, ":tensorflow:serving:embedded:inflight_requests", model_name="spin"
        )

    wait_until(lambda: inflight() == 3, 60, message="3 spin requests in flight")
    server.process.signal(signal.SIGTERM)
    for call in calls:
        response = call.result()  # raises if the server dropped the request
        assert response.model_spec.name == "spin"
    assert server.process.process.wait(60) == 0
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("model_config_list { bogus: 1 }", "no field named"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } }",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is a",
        ),
        (
            "model_config_list { config { name: 'a' base_path: 'a' "
            "model_platform: 'tensorflow' } }",
            "Expected model a to have an absolute path or URI; got base_path()=a",
        ),
    ],
    ids=["unknown-field", "no-platform", "relative-path"],
)
def test_invalid_config_exits_1_before_loading_anything(tmp_path, config_text, message):
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
    assert "Failed to start server. Error: INVALID_ARGUMENT" in result.stderr
