"""Model lifecycle on a live embedded server: rollover under load, corrupt and incomplete
versions, warmup replay, unload on delete. They run on model `rolling` (latest-1 policy,
polled every second) of the shared multi-model server, in file order, each starting from
the state the previous one left (noted per test)."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.fixtures.processes import wait_until
from tests.fixtures.serving import ModelServer, health_status
from tests.serving.helpers import metric_value, predict_request, publish_copy, scaled_images

pytestmark = pytest.mark.slow
EMBEDDED = ":tensorflow:serving:embedded:"
MODEL = "rolling"


@pytest.fixture
def lifecycle(multi_model_server) -> tuple[ModelServer, Path]:
    """(server, base path of `rolling`) on the shared multi-model server."""
    server, root = multi_model_server
    return server, root / MODEL


def _versions(server: ModelServer) -> dict[int, dict]:
    body = httpx.get(f"{server.rest_url}/v1/models/{MODEL}", timeout=10).json()
    return {int(s["version"]): s for s in body["model_version_status"]}


def _state(server: ModelServer, version: int) -> str | None:
    status = _versions(server).get(version)
    return status["state"] if status else None


def _served_version(server: ModelServer, images) -> int:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(
            predict_request(images, name=MODEL), timeout=30
        ).model_spec.version.value


def test_rollover_under_load_has_zero_failures(lifecycle, trained_repository, mnist_test_images):
    """v1 serving -> publish v2 while 4 clients send requests -> v2 serves, v1 END."""
    server, model_dir = lifecycle
    images = scaled_images(mnist_test_images[0], 4)
    stop = threading.Event()
    served: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(5000):  # bounded: the rollover takes a few seconds
                if stop.is_set():
                    return
                try:
                    response = stub.Predict(predict_request(images, name=MODEL), timeout=30)
                    with lock:
                        served[response.model_spec.version.value] += 1
                except grpc.RpcError as error:
                    with lock:
                        failures.append(f"{error.code()}: {error.details()}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: served[1] >= 20, 60, message="requests served by v1")
        publish_copy(trained_repository / "mnist" / "1", model_dir, 2)
        wait_until(lambda: _state(server, 1) == "END", 120, message="v1 unloaded")
        count_after_unload = served[2]
        wait_until(lambda: served[2] >= count_after_unload + 20, 60, message="v2 serving")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert served[1] > 0 and served[2] > 0
    assert _state(server, 2) == "AVAILABLE"
    metrics = httpx.get(server.metrics_url, timeout=10).text
    assert (
        metric_value(metrics, ":tensorflow:serving:embedded:loaded_versions", model_name=MODEL) == 1
    )
    assert (
        metric_value(
            metrics,
            ":tensorflow:serving:embedded:request_version_count",
            model_name=MODEL,
            version="2",
        )
        >= 20
    )


def test_corrupt_version_never_replaces_the_serving_one(lifecycle, mnist_test_images):
    """v2 serving -> drop in v3 whose saved_model.pb is garbage -> v3 END with error."""
    server, model_dir = lifecycle
    corrupt = model_dir / ".tmp-corrupt"
    shutil.copytree(model_dir / "2", corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel \xff" * 50)
    corrupt.rename(model_dir / "3")
    wait_until(lambda: _state(server, 3) == "END", 60, message="v3 load failure")
    status = _versions(server)[3]["status"]
    assert status["error_code"] != "OK" and status["error_message"]
    assert _state(server, 2) == "AVAILABLE"
    assert _served_version(server, scaled_images(mnist_test_images[0], 1)) == 2
    assert health_status(server.grpc_target) == "SERVING"


def test_incomplete_version_fails_then_loads_once_complete(lifecycle, mnist_test_images):
    """v2 serving, v3 corrupt -> v4 without saved_model.pb (a copy in progress) is END with
    NOT_FOUND; once its files are complete it loads and, being latest, replaces v2."""
    server, model_dir = lifecycle
    incomplete = model_dir / "4"
    shutil.copytree(model_dir / "2" / "variables", incomplete / "variables")
    wait_until(lambda: _state(server, 4) == "END", 60, message="v4 load failure")
    assert _versions(server)[4]["status"]["error_code"] == "NOT_FOUND"
    assert _served_version(server, scaled_images(mnist_test_images[0], 1)) == 2
    for item in (model_dir / "2").iterdir():
        if item.name != "variables":
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, incomplete / item.name)
    wait_until(lambda: _state(server, 4) == "AVAILABLE", 60, message="v4 loaded")
    wait_until(lambda: _state(server, 2) == "END", 60, message="v2 unloaded")
    assert _served_version(server, scaled_images(mnist_test_images[0], 1)) == 4


def test_failing_warmup_keeps_the_version_out_of_service(lifecycle, mnist_test_images):
    """v4 serving -> v5 whose warmup record asks for an unknown signature -> v5 END."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    server, model_dir = lifecycle
    staging = model_dir / ".tmp-bad-warmup"
    shutil.copytree(model_dir / "4", staging)
    request = predict_request(
        scaled_images(mnist_test_images[0], 1), signature_name="missing", name=MODEL
    )
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(staging / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(record.SerializeToString())
    staging.rename(model_dir / "5")
    wait_until(lambda: _state(server, 5) == "END", 60, message="v5 warmup failure")
    status = _versions(server)[5]["status"]
    assert status["error_code"] == "FAILED_PRECONDITION"
    assert "missing" in status["error_message"]
    assert _served_version(server, scaled_images(mnist_test_images[0], 1)) == 4


def test_deleted_version_is_unloaded(lifecycle, mnist_test_images):
    """v4 serving -> delete v3, v4, v5 -> the policy falls back to v2, v4 is END."""
    server, model_dir = lifecycle
    for version in (3, 5, 4):
        shutil.rmtree(model_dir / str(version))
    wait_until(lambda: _state(server, 4) == "END", 60, message="v4 unloaded")
    wait_until(lambda: _state(server, 2) == "AVAILABLE", 60, message="v2 reloaded")
    assert _served_version(server, scaled_images(mnist_test_images[0], 1)) == 2
    assert 3 not in _versions(server)  # a failed version is forgotten with its directory
