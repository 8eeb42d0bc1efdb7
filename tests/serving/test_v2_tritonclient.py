"""The Open Inference Protocol against a client this project did not write: tritonclient's
HTTP and gRPC clients (`tritonclient[http,grpc]` from PyPI, in its own venv, see
`make tritonclient`) drive a real `python -m serving`.

tests/serving/tritonclient_probe.py runs the calls and prints what tritonclient saw; this
module serves `mnist` (with the label `stable`) and the corpus's one-identity-per-dtype
model, and checks the answers against TF Serving's own gRPC Predict on the same server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.fixtures.processes import REPO_ROOT
from tests.fixtures.serving import SERVING_CONFIG_DIR, ModelServer, launch_model_server
from tests.serving.helpers import (
    DATATYPE_SAMPLES,
    MNIST_V2_METADATA,
    model_config,
    predict_request,
    scaled_images,
)

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("tritonclient_probe.py")
TRITONCLIENT_PYTHON = Path(
    os.environ.get("TRITONCLIENT_PYTHON", REPO_ROOT / ".cache" / "tritonclient" / "bin" / "python")
)
PROBE_TIMEOUT = 300


@pytest.fixture(scope="module")
def v2_server(
    v2_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """`python -m serving` on mnist (label stable -> 1) and tfs_corpus, batching as in prod."""
    directory = tmp_path_factory.mktemp("v2-server")
    config = model_config(
        ("mnist", v2_repository / "mnist"), ("tfs_corpus", v2_repository / "tfs_corpus"), stable=1
    )
    config_file = directory / "models.config"
    config_file.write_text(text_format.MessageToString(config))
    server = launch_model_server(
        directory,
        config_file=config_file,
        enable_batching=True,
        batching_parameters_file=SERVING_CONFIG_DIR / "batching.config",
    )
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def images(mnist_test_images) -> np.ndarray:
    return scaled_images(mnist_test_images[0], 5)


def sample_arrays() -> dict[str, np.ndarray]:
    """One [2, 2] array per identity signature of tfs_corpus (BYTES as numpy bytes)."""
    from serving.protocol.v2_codec import DATATYPES

    arrays = {}
    for signature, (datatype, values) in DATATYPE_SAMPLES.items():
        if datatype == "BYTES":
            array = np.array([v.encode() for v in values], dtype=np.bytes_)
        else:
            array = np.array(values, dtype=DATATYPES[datatype])
        arrays[f"dtype_{signature}"] = array.reshape(2, 2)
    return arrays


@pytest.fixture(scope="module")
def probe(v2_server: ModelServer, images: np.ndarray, tmp_path_factory) -> dict:
    """What tritonclient saw, as tritonclient_probe.py prints it."""
    if not TRITONCLIENT_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TRITONCLIENT_PYTHON} is missing: `make test` installs it")
        pytest.skip("tritonclient's venv is missing: run `make tritonclient`")
    inputs = tmp_path_factory.mktemp("tritonclient") / "inputs.npz"
    np.savez(inputs, images=images, **sample_arrays())
    completed = subprocess.run(
        [
            str(TRITONCLIENT_PYTHON),
            str(PROBE),
            f"--http=127.0.0.1:{v2_server.rest_port}",
            f"--grpc={v2_server.grpc_target}",
            f"--inputs={inputs}",
        ],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, (
        f"probe failed:\n{completed.stderr[-4000:]}\n--- server log ---\n"
        f"{v2_server.process.log_tail()}"
    )
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def expected(v2_server: ModelServer, images: np.ndarray) -> dict[str, np.ndarray]:
    """TF Serving's gRPC Predict on the same server: the reference for every v2 answer."""
    import tensorflow as tf

    with grpc.insecure_channel(v2_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(images), timeout=30)
        scores = stub.Predict(
            predict_request(images.reshape(len(images), 784), "predict_images"), timeout=30
        )
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    outputs["scores"] = tf.make_ndarray(scores.outputs["scores"])
    return outputs


def array_of(description: dict) -> np.ndarray:
    if description["dtype"] == "bytes":
        values = [base64.b64decode(v) for v in description["data"]]
        return np.array(values, dtype=object).reshape(description["shape"])
    data = np.array(description["data"], dtype=np.dtype(description["dtype"]))
    return data.reshape(description["shape"])


def assert_mnist_outputs(seen: dict, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(array_of(seen["classes"]), expected["classes"])
    np.testing.assert_allclose(
        array_of(seen["probabilities"]), expected["probabilities"], rtol=1e-5, atol=1e-6
    )
    assert seen["classes"]["dtype"] == "<i8" and seen["probabilities"]["dtype"] == "<f4"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_health_readiness_and_metadata(probe, protocol):
    seen = probe[protocol]
    assert seen["is_server_live"] is True
    assert seen["is_server_ready"] is True
    assert seen["is_model_ready"] is True
    assert seen["is_model_ready_by_label"] is True
    assert seen["is_model_ready_unloaded_version"] is False
    assert seen["model_metadata"] == MNIST_V2_METADATA
    assert seen["model_metadata_version_1"] == MNIST_V2_METADATA
    server = seen["server_metadata"]
    assert server["name"] == "mnist-serving-stack"
    assert server["extensions"] == ["binary_tensor_data"]


def test_http_infer_json_and_binary(probe, expected):
    seen = probe["http"]
    for form in ("json", "binary"):
        result = seen[f"infer_{form}"]
        assert (result["id"], result["model_version"]) == (f"http-{form}", "1")
        assert_mnist_outputs(result, expected)
    assert_mnist_outputs(seen["infer_all_outputs"], expected)
    np.testing.assert_allclose(
        array_of(seen["infer_predict_images"]), expected["scores"], rtol=1e-5, atol=1e-6
    )


def test_grpc_infer_raw_and_typed(probe, expected):
    seen = probe["grpc"]
    assert (seen["infer_raw"]["id"], seen["infer_raw"]["model_version"]) == ("grpc-raw", "1")
    assert_mnist_outputs(seen["infer_raw"], expected)
    typed = seen["infer_typed"]
    assert (typed["id"], typed["raw_output_contents"]) == ("grpc-typed", 0)
    assert_mnist_outputs(typed, expected)


@pytest.mark.parametrize("signature", sorted(DATATYPE_SAMPLES))
def test_every_datatype_round_trips_through_both_clients(probe, signature):
    sent = sample_arrays()[f"dtype_{signature}"]
    if sent.dtype.kind == "S":
        sent = np.array(sent.ravel().tolist(), dtype=object).reshape(sent.shape)
    forms = {**probe["http"]["datatypes"][signature], **probe["grpc"]["datatypes"][signature]}
    assert sorted(forms) == ["binary", "json", "raw"]
    for form, description in forms.items():
        received = array_of(description)
        assert received.shape == sent.shape, form
        assert received.dtype == sent.dtype, form
        np.testing.assert_array_equal(received, sent, err_msg=form)


def test_client_mistakes_reach_the_client_as_4xx_and_grpc_codes(probe):
    http, grpc_errors = probe["http"]["errors"], probe["grpc"]["errors"]
    assert http["wrong_datatype"]["status"] == "400"
    assert "signature 'serving_default' takes FP32" in http["wrong_datatype"]["message"]
    assert grpc_errors["wrong_datatype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    for case in ("unknown_model", "unknown_version"):
        assert http[case]["status"] == "404", http[case]
        assert grpc_errors[case]["status"] == "StatusCode.NOT_FOUND", grpc_errors[case]
    assert http["unknown_input"]["status"] == "400"
    assert "not found in request" in http["unknown_input"]["message"]
    assert grpc_errors["unknown_input"]["status"] == "StatusCode.INVALID_ARGUMENT"
