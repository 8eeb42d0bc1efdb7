"""Conformance: what a TF Serving client sees, through the official stubs and plain HTTP.

Parametrized over backends: the embedded server always, the real tensorflow_model_server
when TFSERVING_BIN names one. Both serve the same repository (`mnist` versions 1 and 2,
copies of the trainer's exported model) with the same config file (latest 2, labels
stable=1 / canary=2), batching and monitoring configs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.fixtures.serving import (
    SERVING_CONFIG_DIR,
    launch_model_server,
    launch_tensorflow_model_server,
)
from tests.serving.helpers import (
    metric_value,
    predict_request,
    publish_copy,
    scaled_images,
    write_model_config,
)

pytestmark = pytest.mark.slow

BACKENDS = ["embedded", "tensorflow_model_server"]


@dataclasses.dataclass
class Backend:
    name: str
    grpc_target: str
    rest_url: str
    model_dir: Path
    prediction: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub

    @property
    def metrics_url(self) -> str:
        return f"{self.rest_url}/monitoring/prometheus/metrics"


@pytest.fixture(scope="session")
def conformance_config(trained_repository: Path, tmp_path_factory) -> Path:
    """Repository with mnist/1 and mnist/2 (copies of the trained model) and its config."""
    root = tmp_path_factory.mktemp("conformance")
    model_dir = root / "repository" / "mnist"
    for version in (1, 2):
        publish_copy(trained_repository / "mnist" / "1", model_dir, version)
    return write_model_config(
        root / "models.config", model_dir, num_versions=2, labels={"stable": 1, "canary": 2}
    )


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, conformance_config: Path, tmp_path_factory) -> Iterator[Backend]:
    """A running server of each backend, on the conformance repository."""
    log_dir = tmp_path_factory.mktemp(f"backend-{request.param}")
    if request.param == "embedded":
        server = launch_model_server(
            log_dir,
            config_file=conformance_config,
            enable_batching=True,
            batching_parameters_file=SERVING_CONFIG_DIR / "batching.config",
            monitoring_config_file=SERVING_CONFIG_DIR / "monitoring.config",
        )
        process, grpc_target, rest_url = server.process, server.grpc_target, server.rest_url
    else:
        binary = os.environ.get("TFSERVING_BIN")
        if not binary:
            pytest.skip("TFSERVING_BIN not set: no tensorflow_model_server binary to compare")
        server = launch_tensorflow_model_server(
            binary,
            log_dir,
            conformance_config,
            enable_batching=True,
            batching_parameters_file=SERVING_CONFIG_DIR / "batching.config",
            monitoring_config_file=SERVING_CONFIG_DIR / "monitoring.config",
        )
        process, grpc_target, rest_url = server.process, server.grpc_target, server.rest_url
    channel = grpc.insecure_channel(grpc_target)
    yield Backend(
        request.param,
        grpc_target,
        rest_url,
        conformance_config.parent / "repository" / "mnist",
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()
    process.stop()


def _rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=30)
    return caught.value


def _outputs(response) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


# --- gRPC Predict ---------------------------------------------------------------------


def test_predict_serves_latest_version_with_real_predictions(backend, mnist_test_images):
    images, labels = mnist_test_images
    response = backend.prediction.Predict(predict_request(scaled_images(images, 64)), timeout=30)
    assert response.model_spec.name == "mnist"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    outputs = _outputs(response)
    assert outputs["probabilities"].shape == (64, 10)
    assert outputs["probabilities"].dtype == np.float32
    assert outputs["classes"].dtype == np.int64
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(outputs["classes"], outputs["probabilities"].argmax(axis=1))
    # The trained model recognises held-out digits: proof that real inference ran.
    assert (outputs["classes"] == labels[:64]).mean() > 0.8


@pytest.mark.parametrize(
    ("version", "label", "expected"),
    [(1, None, 1), (2, None, 2), (None, "stable", 1), (None, "canary", 2)],
)
def test_predict_by_version_and_label(backend, mnist_test_images, version, label, expected):
    request = predict_request(scaled_images(mnist_test_images[0], 3), version=version, label=label)
    response = backend.prediction.Predict(request, timeout=30)
    assert response.model_spec.version.value == expected


def test_predict_images_signature_matches_serving_default(backend, mnist_test_images):
    images = scaled_images(mnist_test_images[0], 16)
    default = _outputs(backend.prediction.Predict(predict_request(images), timeout=30))
    flat = backend.prediction.Predict(
        predict_request(images.reshape(16, 784), signature_name="predict_images"), timeout=30
    )
    assert flat.model_spec.signature_name == "predict_images"
    np.testing.assert_allclose(_outputs(flat)["scores"], default["probabilities"], atol=1e-5)


def test_output_filter_returns_only_requested_outputs(backend, mnist_test_images):
    request = predict_request(scaled_images(mnist_test_images[0], 4))
    request.output_filter.append("classes")
    response = backend.prediction.Predict(request, timeout=30)
    assert list(response.outputs) == ["classes"]


def test_tensor_content_input_is_accepted(backend, mnist_test_images):
    images = scaled_images(mnist_test_images[0], 5)
    request = predict_request(images)
    proto = request.inputs["images"]
    proto.ClearField("float_val")
    proto.tensor_content = images.tobytes()
    reference = _outputs(backend.prediction.Predict(predict_request(images), timeout=30))
    outputs = _outputs(backend.prediction.Predict(request, timeout=30))
    np.testing.assert_array_equal(outputs["classes"], reference["classes"])


# --- gRPC errors, in TF Serving's codes and message forms -------------------------------


def _bad_dtype_request(images):
    return predict_request(images.astype(np.int64))


def _unparsable_request(images):
    request = predict_request(images)
    proto = request.inputs["images"]
    proto.ClearField("float_val")
    proto.tensor_content = b"\x00" * 7  # not 4 bytes per element
    return request


@pytest.mark.parametrize(
    ("make_request", "code", "message"),
    [
        (
            lambda x: predict_request(x, name="nope"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            lambda x: predict_request(x, version=7),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(mnist, 7)",
        ),
        (
            lambda x: predict_request(x, label="nightly"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nightly",
        ),
        (
            lambda x: predict_request(x, alias="pixels"),
            grpc.StatusCode.INVALID_ARGUMENT,
            # tensorflow/cc/saved_model/util.cc GetInputValues walks the signature's inputs.
            "Signature input alias: images(feed name: serving_default_images:0) not found in "
            "request and no default value provided",
        ),
        (
            lambda x: predict_request(x, signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (_unparsable_request, grpc.StatusCode.INVALID_ARGUMENT, ""),
        (_bad_dtype_request, grpc.StatusCode.INVALID_ARGUMENT, ""),
        (
            # TF Serving does not check the declared shape: TensorFlow's Reshape refuses it.
            lambda x: predict_request(np.zeros((2, 27, 28), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
        (
            lambda x: predict_request(np.zeros((65, 28, 28), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "larger than maximum input batch size 64",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "wrong-alias",
        "unknown-signature",
        "unparsable-tensor",
        "wrong-dtype",
        "wrong-shape",
        "over-max-batch-size",
    ],
)
def test_predict_errors(backend, mnist_test_images, make_request, code, message):
    error = _rpc_error(
        backend.prediction.Predict, make_request(scaled_images(mnist_test_images[0], 2))
    )
    assert error.code() == code, error.details()
    assert message in error.details()


def test_unknown_output_filter_is_invalid_argument(backend, mnist_test_images):
    request = predict_request(scaled_images(mnist_test_images[0], 2))
    request.output_filter.append("logits")
    error = _rpc_error(backend.prediction.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: logits" in error.details()


# --- GetModelMetadata / GetModelStatus -----------------------------------------------


def _metadata_request(**spec):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = spec.pop("name", "mnist")
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.metadata_field.append("signature_def")
    return request


def test_metadata_is_the_exported_signature_def_map(backend):
    response = backend.prediction.GetModelMetadata(_metadata_request(), timeout=30)
    assert response.model_spec.name == "mnist"
    assert response.model_spec.version.value == 2
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    saved_model = saved_model_pb2.SavedModel.FromString(
        (backend.model_dir / "2" / "saved_model.pb").read_bytes()
    )
    assert dict(signature_map.signature_def) == dict(saved_model.meta_graphs[0].signature_def)
    # The trainer's contract, as a client reads it from the metadata.
    default = signature_map.signature_def["serving_default"]
    images = default.inputs["images"]
    assert images.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [-1, 28, 28]
    assert default.outputs["probabilities"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in default.outputs["probabilities"].tensor_shape.dim] == [-1, 10]
    assert default.outputs["classes"].dtype == types_pb2.DT_INT64
    flat = signature_map.signature_def["predict_images"]
    assert [d.size for d in flat.inputs["images"].tensor_shape.dim] == [-1, 784]
    assert [d.size for d in flat.outputs["scores"].tensor_shape.dim] == [-1, 10]


def test_metadata_by_label_and_errors(backend):
    by_label = backend.prediction.GetModelMetadata(
        _metadata_request(version_label="stable"), timeout=30
    )
    assert by_label.model_spec.version.value == 1
    error = _rpc_error(backend.prediction.GetModelMetadata, _metadata_request(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(nope)" in error.details()
    bad_field = _metadata_request()
    bad_field.metadata_field[:] = ["graph"]
    error = _rpc_error(backend.prediction.GetModelMetadata, bad_field)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status_lists_available_versions(backend):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    response = backend.models.GetModelStatus(request, timeout=30)
    states = {s.version: (s.state, s.status.error_code) for s in response.model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: (available, 0), 2: (available, 0)}
    request.model_spec.version.value = 1
    single = backend.models.GetModelStatus(request, timeout=30)
    assert [s.version for s in single.model_version_status] == [1]


def test_model_status_errors(backend):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    assert _rpc_error(backend.models.GetModelStatus, request).code() == grpc.StatusCode.NOT_FOUND
    request.model_spec.name = "mnist"
    request.model_spec.version.value = 9
    assert _rpc_error(backend.models.GetModelStatus, request).code() == grpc.StatusCode.NOT_FOUND


# --- REST -----------------------------------------------------------------------------


def _post(backend, path: str, body) -> httpx.Response:
    kwargs = {"content": body} if isinstance(body, str | bytes) else {"json": body}
    return httpx.post(f"{backend.rest_url}{path}", timeout=30, **kwargs)


def test_rest_predict_row_format(backend, mnist_test_images):
    images = scaled_images(mnist_test_images[0], 3)
    response = _post(backend, "/v1/models/mnist:predict", {"instances": images.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    assert set(predictions[0]) == {"probabilities", "classes"}
    assert predictions[0]["classes"] == int(np.argmax(predictions[0]["probabilities"]))


def test_rest_predict_columnar_format_single_output(backend, mnist_test_images):
    images = scaled_images(mnist_test_images[0], 2).reshape(2, 784)
    response = _post(
        backend,
        "/v1/models/mnist/versions/1:predict",
        {"signature_name": "predict_images", "inputs": {"images": images.tolist()}},
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]  # one output: the tensor itself, not a map
    assert np.asarray(outputs).shape == (2, 10)


def test_rest_predict_columnar_format_several_outputs(backend, mnist_test_images):
    images = scaled_images(mnist_test_images[0], 2)
    response = _post(backend, "/v1/models/mnist/labels/canary:predict", {"inputs": images.tolist()})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert np.asarray(outputs["probabilities"]).shape == (2, 10)
    assert len(outputs["classes"]) == 2


def test_rest_model_status_json(backend):
    response = httpx.get(f"{backend.rest_url}/v1/models/mnist", timeout=30)
    assert response.status_code == 200
    body = response.json()
    ok = {"error_code": "OK", "error_message": ""}
    assert sorted(body["model_version_status"], key=lambda s: s["version"]) == [
        {"version": "1", "state": "AVAILABLE", "status": ok},
        {"version": "2", "state": "AVAILABLE", "status": ok},
    ]
    one = httpx.get(f"{backend.rest_url}/v1/models/mnist/versions/1", timeout=30).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    # get_model_status_impl.cc reads a version only: a label is ignored, every version listed.
    by_label = httpx.get(f"{backend.rest_url}/v1/models/mnist/labels/stable", timeout=30).json()
    assert sorted(s["version"] for s in by_label["model_version_status"]) == ["1", "2"]


def test_rest_metadata_json(backend):
    response = httpx.get(f"{backend.rest_url}/v1/models/mnist/versions/1/metadata", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"] == {"name": "mnist", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert signatures["predict_images"]["method_name"] == "tensorflow/serving/predict"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/models/nope:predict", {"instances": [[0]]}, 404, "Latest(nope)"),
        ("POST", "/v1/models/mnist/versions/7:predict", {"instances": [[0]]}, 404, "Specific"),
        ("POST", "/v1/models/mnist/labels/x:predict", {"instances": [[0]]}, 400, "label"),
        ("POST", "/v1/models/mnist:predict", "{not json", 400, ""),
        ("POST", "/v1/models/mnist:predict", {"instance": []}, 400, "instances"),
        ("POST", "/v1/models/mnist:predict", {"instances": [["a"] * 28] * 28}, 400, ""),
        ("POST", "/v1/models/mnist:predict", {"instances": [[0.0, 1.0]]}, 400, ""),
        ("POST", "/v1/models/mnist:predict", {"instances": [[[0.0] * 28] * 27]}, 400, ""),
        (
            "POST",
            "/v1/models/mnist:predict",
            {"signature_name": "nope", "instances": [[0]]},
            400,
            "nope",
        ),
        ("GET", "/v1/models/nope", None, 404, ""),
        ("GET", "/v1/models/mnist/versions/9", None, 404, ""),
        ("GET", "/v1/models/mnist/versions/abc", None, 400, "Malformed request"),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "bad-json",
        "missing-instances",
        "strings-for-floats",
        "wrong-shape",
        "ragged-shape",
        "unknown-signature",
        "status-unknown-model",
        "status-unknown-version",
        "malformed-path",
    ],
)
def test_rest_errors(backend, method, path, body, status, message):
    if method == "POST":
        response = _post(backend, path, body)
    else:
        response = httpx.get(f"{backend.rest_url}{path}", timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error
    assert message in error


# --- Metrics --------------------------------------------------------------------------


def test_prometheus_metrics_use_tf_serving_names(backend, mnist_test_images):
    before = httpx.get(backend.metrics_url, timeout=30).text
    ok_before = metric_value(
        before, ":tensorflow:serving:request_count", model_name="mnist", status="OK"
    )
    backend.prediction.Predict(predict_request(scaled_images(mnist_test_images[0], 1)), timeout=30)
    _post(backend, "/v1/models/mnist:predict", {"instances": [[[0.0] * 28] * 28]})
    _rpc_error(backend.prediction.Predict, predict_request(np.zeros((1, 28, 28)), version=7))
    text = httpx.get(backend.metrics_url, timeout=30).text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    ok = metric_value(text, ":tensorflow:serving:request_count", model_name="mnist", status="OK")
    assert ok >= ok_before + 2
    assert (
        metric_value(
            text, ":tensorflow:serving:request_count", model_name="mnist", status="NOT_FOUND"
        )
        >= 1
    )
    # gRPC times under the RPC's name, REST under the path's verb (http_server.cc).
    for api, entrypoint in (("Predict", "GRPC"), ("predict", "REST")):
        assert (
            metric_value(
                text,
                ":tensorflow:serving:request_latency_count",
                model_name="mnist",
                API=api,
                entrypoint=entrypoint,
            )
            >= 1
        )


# --- Embedded server only: what TF Serving lacks or does differently --------------------


def test_concurrent_requests_are_batched_and_split_back(backend, mnist_test_images):
    if backend.name != "embedded":
        pytest.skip("batch composition is observed through the embedded server's metrics")
    images = scaled_images(mnist_test_images[0], 48)
    whole = _outputs(backend.prediction.Predict(predict_request(images), timeout=30))
    name = ":tensorflow:serving:batching_session:processed_batch_size"
    # An idle model runs each request at once, so whether a burst merges depends on how fast
    # the server keeps up: send bursts until one does (bounded), checking every answer.
    for _burst in range(10):
        before = httpx.get(backend.metrics_url, timeout=30).text
        batches_before = metric_value(before, f"{name}_count", model_name="mnist")
        rows_before = metric_value(before, f"{name}_sum", model_name="mnist")
        calls = [
            backend.prediction.Predict.future(predict_request(images[i : i + 1]), timeout=60)
            for i in range(48)
        ]
        classes = [int(_outputs(call.result())["classes"][0]) for call in calls]
        assert classes == whole["classes"].tolist()  # each caller got its own row back
        after = httpx.get(backend.metrics_url, timeout=30).text
        batches = metric_value(after, f"{name}_count", model_name="mnist") - batches_before
        rows = metric_value(after, f"{name}_sum", model_name="mnist") - rows_before
        assert rows == 48
        if batches < 48:  # some TensorFlow calls served several requests
            return
    pytest.fail("no burst of 48 concurrent requests was ever merged into a batch")


def test_embedded_metrics_report_versions(backend, mnist_test_images):
    if backend.name != "embedded":
        pytest.skip("these metrics are the embedded server's additions")
    backend.prediction.Predict(
        predict_request(scaled_images(mnist_test_images[0], 1), version=1), timeout=30
    )
    text = httpx.get(backend.metrics_url, timeout=30).text
    prefix = ":tensorflow:serving:embedded:"
    assert metric_value(text, f"{prefix}loaded_versions", model_name="mnist") == 2
    assert metric_value(text, f"{prefix}model_version_state", model_name="mnist", version="1") == 30
    assert (
        metric_value(
            text, f"{prefix}request_version_count", model_name="mnist", version="1", status="OK"
        )
        >= 1
    )
    assert "# TYPE :tensorflow:serving:batching_session:queuing_latency histogram" in text
