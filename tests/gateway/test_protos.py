"""The gateway's compiled proto subset is byte-compatible with tensorflow_serving.apis.

Both sides build the same messages; the bytes must be identical, and each side must parse
the other's bytes back to the same content. The gateway's classes live in a private
descriptor pool, which is what lets both sets share this process.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import any_pb2

from gateway.tensors import fill_float_tensor, to_numpy
from gateway.tfs_protos import (
    GET_MODEL_METADATA_METHOD,
    GET_MODEL_STATUS_METHOD,
    PREDICT_METHOD,
    load_messages,
)
from tests.fixtures.processes import REPO_ROOT

ours = load_messages()


@pytest.fixture(scope="module")
def official():
    """tensorflow_serving.apis (imports TensorFlow, so only in this test module)."""
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2,
        predict_pb2,
        prediction_service_pb2,
    )

    return {
        "predict": predict_pb2,
        "status": get_model_status_pb2,
        "metadata": get_model_metadata_pb2,
        "meta_graph": meta_graph_pb2,
        "prediction_service": prediction_service_pb2,
        "model_service": model_service_pb2,
    }


def assert_same_bytes(our_message, official_message) -> None:
    our_bytes = our_message.SerializeToString(deterministic=True)
    official_bytes = official_message.SerializeToString(deterministic=True)
    assert our_bytes == official_bytes
    # And each parses the other's bytes to the same message.
    assert type(official_message).FromString(our_bytes) == official_message
    assert type(our_message).FromString(official_bytes) == our_message


def build_predict_request(module, version=None, label=None):
    request = module.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    tensor = request.inputs["images"]
    tensor.dtype = 1
    for size in (2, 28, 28):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = np.linspace(0, 1, 2 * 28 * 28, dtype="<f4").tobytes()
    request.output_filter.append("probabilities")
    return request


@pytest.mark.parametrize(("version", "label"), [(3, None), (None, "canary"), (None, None)])
def test_predict_request_bytes_match(official, version, label) -> None:
    assert_same_bytes(
        build_predict_request(ours, version, label),
        build_predict_request(official["predict"], version, label),
    )


def test_gateway_tensor_encoding_is_what_tensorflow_reads(official) -> None:
    import tensorflow as tf

    batch = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    request = ours.PredictRequest()
    fill_float_tensor(request.inputs["images"], batch)
    parsed = official["predict"].PredictRequest.FromString(request.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(parsed.inputs["images"]), batch)


def test_predict_response_from_tensorflow_parses(official) -> None:
    import tensorflow as tf

    probabilities = np.random.default_rng(1).random((4, 10)).astype(np.float32)
    response = official["predict"].PredictResponse()
    response.model_spec.name = "mnist"
    response.model_spec.version.value = 7
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
    response.outputs["classes"].CopyFrom(tf.make_tensor_proto(np.arange(4, dtype=np.int64)))

    parsed = ours.PredictResponse.FromString(response.SerializeToString())
    assert parsed.model_spec.version.value == 7
    np.testing.assert_array_equal(to_numpy(parsed.outputs["probabilities"]), probabilities)
    np.testing.assert_array_equal(to_numpy(parsed.outputs["classes"]), np.arange(4))
    assert_same_bytes(parsed, response)


def test_model_status_bytes_match(official) -> None:
    def build(module):
        response = module.GetModelStatusResponse()
        for version, state in ((1, 50), (2, 30), (3, 20)):
            row = response.model_version_status.add()
            row.version = version
            row.state = state
            row.status.error_code = 5 if state == 50 else 0
            row.status.error_message = "unloaded" if state == 50 else ""
        return response

    assert_same_bytes(build(ours), build(official["status"]))
    request = ours.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    official_request = official["status"].GetModelStatusRequest()
    official_request.model_spec.name = "mnist"
    assert_same_bytes(request, official_request)


def test_model_metadata_signature_map_parses(official) -> None:
    meta_graph = official["meta_graph"]
    signature_map = official["metadata"].SignatureDefMap()
    signature = signature_map.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    images = meta_graph.TensorInfo(name="serving_default_images:0", dtype=1)
    for size in (-1, 28, 28):
        images.tensor_shape.dim.add().size = size
    signature.inputs["images"].CopyFrom(images)
    signature.outputs["probabilities"].CopyFrom(meta_graph.TensorInfo(name="p:0", dtype=1))
    response = official["metadata"].GetModelMetadataResponse()
    response.model_spec.name = "mnist"
    response.model_spec.version.value = 2
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)

    parsed = ours.GetModelMetadataResponse.FromString(response.SerializeToString())
    ours_map = ours.SignatureDefMap.FromString(parsed.metadata["signature_def"].value)
    ours_signature = ours_map.signature_def["serving_default"]
    assert ours_signature.method_name == "tensorflow/serving/predict"
    assert [d.size for d in ours_signature.inputs["images"].tensor_shape.dim] == [-1, 28, 28]
    assert_same_bytes(ours_map, signature_map)


def test_method_paths_match_the_official_services(official) -> None:
    prediction = official["prediction_service"].DESCRIPTOR.services_by_name["PredictionService"]
    model = official["model_service"].DESCRIPTOR.services_by_name["ModelService"]

    def path(service, method: str) -> str:
        return f"/{service.full_name}/{service.methods_by_name[method].name}"

    assert path(prediction, "Predict") == PREDICT_METHOD
    assert path(prediction, "GetModelMetadata") == GET_MODEL_METADATA_METHOD
    assert path(model, "GetModelStatus") == GET_MODEL_STATUS_METHOD


def test_gateway_never_imports_tensorflow() -> None:
    code = (
        "import sys, gateway.app, gateway.__main__;"
        "gateway.app.create_app(gateway.config.Settings());"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0].startswith('tensorflow'));"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
