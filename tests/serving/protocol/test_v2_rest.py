"""The Open Inference Protocol's REST adapter in-process, over a real ServerCore: routes,
metadata, readiness, JSON and binary_data inference for every datatype, limits, and the
client mistakes that must be 4xx with a message saying what to fix."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from serving.data_plane import ModelSpec, PredictRequest
from serving.protocol.v2_codec import encode_raw
from serving.protocol.v2_rest import V2RestApp
from serving.server import rest_app
from tests.serving.helpers import (
    DATATYPE_SAMPLES,
    MNIST_V2_METADATA,
    metric_value,
    scaled_images,
)
from tests.serving.protocol.conftest import MAX_REQUEST_TENSOR_BYTES
from tests.serving.tfs_corpus_model import IDENTITY_DTYPES

HEADER_LENGTH = "Inference-Header-Content-Length"


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    """One request to an ASGI app, in a fresh event loop."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v2") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def binary_body(document: dict, sections: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A binary_data extension request: the JSON, then the tensors' bytes."""
    text = json.dumps(document).encode()
    return text + b"".join(sections), {HEADER_LENGTH: str(len(text))}


def binary_outputs(response: httpx.Response) -> tuple[dict, dict[str, bytes]]:
    """(the JSON part, {output name: its raw bytes}) of a binary_data response."""
    length = int(response.headers[HEADER_LENGTH])
    document = json.loads(response.content[:length])
    sections, offset = {}, length
    for output in document["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            sections[output["name"]] = response.content[offset : offset + size]
            offset += size
    assert offset == len(response.content)
    return document, sections


def images_request(images: np.ndarray, binary: bool = False, **fields) -> dict:
    """An infer request body for mnist's `images` input: JSON data, or binary_data_size."""
    tensor = {"name": "images", "datatype": "FP32", "shape": list(images.shape)}
    if binary:
        tensor["parameters"] = {"binary_data_size": images.nbytes}
    else:
        tensor["data"] = images.tolist()
    return {"inputs": [tensor], **fields}


@pytest.fixture(scope="module")
def app(v2_core):
    """The REST port's app: v2 in front of TF Serving's, as `python -m serving` builds it."""
    return rest_app(v2_core.data_plane, v2_core.config)


@pytest.fixture(scope="module")
def images(mnist_test_images) -> np.ndarray:
    return scaled_images(mnist_test_images[0], 3)


def tf_serving_predict(core, images: np.ndarray, signature: str = "") -> dict[str, np.ndarray]:
    """The same model through the data plane as TF Serving's APIs call it (the reference)."""
    request = PredictRequest(ModelSpec("mnist", signature_name=signature), {"images": images})
    return asyncio.run(core.data_plane.predict(request)).outputs


# -- health, metadata, readiness, routing ----------------------------------------------------


def test_health_and_server_metadata(app):
    assert call(app, "GET", "/v2/health/live").json() == {"live": True}
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    metadata = call(app, "GET", "/v2").json()
    assert metadata["name"] == "mnist-serving-stack"
    assert metadata["extensions"] == ["binary_tensor_data"]
    assert metadata["version"]


def test_model_metadata_describes_serving_default_by_version_or_label(app):
    for path in (
        "/v2/models/mnist",
        "/v2/models/mnist/versions/1",
        "/v2/models/mnist/versions/stable",
    ):
        response = call(app, "GET", path)
        assert response.status_code == 200, response.text
        assert response.json() == MNIST_V2_METADATA
    # Unknown rank (the corpus's placeholders) reads as [-1].
    corpus = call(app, "GET", "/v2/models/tfs_corpus").json()
    assert corpus["inputs"] == [{"name": "default", "datatype": "INT32", "shape": [-1]}]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/mnist/versions/7", 404, "Specific(mnist, 7)"),
        ("/v2/models/mnist/versions/canary", 404, "no version or version label 'canary'"),
        ("/v2/models/nope", 404, "nope"),
        ("/v2/models/mnist/versions/99999999999999999999", 404, "no version"),
        ("/v2/models/mnist/config", 404, "No v2 endpoint at GET /v2/models/mnist/config"),
        ("/v2/repository/index", 404, "No v2 endpoint"),
    ],
)
def test_unknown_models_versions_and_paths_are_404(app, path, status, message):
    response = call(app, "GET", path)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_model_readiness(app):
    ready = call(app, "GET", "/v2/models/mnist/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "mnist", "ready": True})
    assert call(app, "GET", "/v2/models/mnist/versions/stable/ready").status_code == 200
    not_loaded = call(app, "GET", "/v2/models/mnist/versions/2/ready")
    assert not_loaded.status_code == 503
    assert not_loaded.json() == {"error": "Model mnist is not ready"}
    assert call(app, "GET", "/v2/models/nope/ready").status_code == 404


def test_v2_paths_go_to_v2_and_the_rest_to_tf_serving(app):
    status = call(app, "GET", "/v1/models/mnist")
    assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
    # Only "/v2" and "/v2/...": a longer first segment is TF Serving's (its 404 page).
    other = call(app, "GET", "/v2x/health/live")
    assert other.status_code == 404 and other.headers["content-type"] == "text/html"
    wrong_method = call(app, "GET", "/v2/models/mnist/infer")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert "use POST" in wrong_method.json()["error"]
    assert call(app, "POST", "/v2/health/live").status_code == 405


# -- inference ---------------------------------------------------------------------------------


def test_json_infer_matches_tf_serving_predict(app, v2_core, images):
    body = images_request(images, id="req-1")
    response = call(app, "POST", "/v2/models/mnist/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["model_name"], result["model_version"], result["id"]) == ("mnist", "1", "req-1")
    assert HEADER_LENGTH.lower() not in response.headers
    expected = tf_serving_predict(v2_core, images)
    outputs = {output["name"]: output for output in result["outputs"]}
    assert list(outputs) == ["classes", "probabilities"]
    assert outputs["classes"]["datatype"] == "INT64" and outputs["classes"]["shape"] == [3]
    assert outputs["classes"]["data"] == expected["classes"].tolist()
    assert outputs["probabilities"]["shape"] == [3, 10]
    probabilities = np.array(outputs["probabilities"]["data"], np.float32).reshape(3, 10)
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)
    # Flat data reads the same (row-major), and a version or label picks that version.
    body["inputs"][0]["data"] = images.ravel().tolist()
    body["outputs"] = [{"name": "classes"}]
    for path in ("/v2/models/mnist/versions/1/infer", "/v2/models/mnist/versions/stable/infer"):
        flat = call(app, "POST", path, json=body).json()
        assert [o["name"] for o in flat["outputs"]] == ["classes"]
        assert flat["outputs"][0]["data"] == expected["classes"].tolist()
        assert flat["model_version"] == "1"


def test_binary_data_in_and_out(app, v2_core, images):
    document = images_request(
        images,
        binary=True,
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "probabilities"},
            {"name": "classes", "parameters": {"binary_data": False}},
        ],
    )
    content, headers = binary_body(document, [images.tobytes()])
    response = call(app, "POST", "/v2/models/mnist/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    result, sections = binary_outputs(response)
    expected = tf_serving_predict(v2_core, images)
    probabilities = np.frombuffer(sections["probabilities"], "<f4").reshape(3, 10)
    np.testing.assert_array_equal(probabilities, expected["probabilities"])
    by_name = {o["name"]: o for o in result["outputs"]}
    assert by_name["probabilities"]["parameters"] == {"binary_data_size": 120}
    assert "data" not in by_name["probabilities"]
    assert by_name["classes"]["data"] == expected["classes"].tolist()  # binary_data: false wins


def test_signature_name_parameter_picks_another_signature(app, v2_core, images):
    flat = images.reshape(3, 784)
    body = images_request(flat, parameters={"signature_name": "predict_images"})
    result = call(app, "POST", "/v2/models/mnist/infer", json=body).json()
    scores = np.array(result["outputs"][0]["data"], np.float32).reshape(3, 10)
    expected = tf_serving_predict(v2_core, flat, "predict_images")["scores"]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("signature", sorted(IDENTITY_DTYPES))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(app, signature, binary):
    datatype, values = DATATYPE_SAMPLES[signature]
    document = {"parameters": {"signature_name": signature, "binary_data_output": binary}}
    tensor = {"name": "default", "datatype": datatype, "shape": [2, 2]}
    sections = []
    if binary:
        from serving.protocol.v2_codec import DATATYPES

        dtype = DATATYPES[datatype]
        array = np.array(
            [v.encode() for v in values] if datatype == "BYTES" else values, dtype=dtype
        )
        sections = [encode_raw(array)]
        tensor["parameters"] = {"binary_data_size": len(sections[0])}
    else:
        tensor["data"] = [values[:2], values[2:]]  # nested rows
    document["inputs"] = [tensor]
    content, headers = binary_body(document, sections)
    path = "/v2/models/tfs_corpus/infer"
    response = call(app, "POST", path, content=content, headers=headers if binary else {})
    assert response.status_code == 200, response.text
    if binary:
        result, raw = binary_outputs(response)
        output = result["outputs"][0]
        assert raw["default"] == sections[0]
    else:
        output = response.json()["outputs"][0]
        assert output["data"] == values
    assert (output["name"], output["datatype"], output["shape"]) == ("default", datatype, [2, 2])


def test_bytes_that_are_not_utf8_come_back_as_binary_data(app):
    raw = encode_raw(np.array([b"\xff\x00", b"ok"], dtype=object))
    document = {
        "parameters": {"signature_name": "string"},
        "inputs": [
            {
                "name": "default",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
    }
    content, headers = binary_body(document, [raw])
    as_json = call(app, "POST", "/v2/models/tfs_corpus/infer", content=content, headers=headers)
    assert as_json.status_code == 400
    assert '"binary_data": true' in as_json.json()["error"]
    document["outputs"] = [{"name": "default", "parameters": {"binary_data": True}}]
    content, headers = binary_body(document, [raw])
    response = call(app, "POST", "/v2/models/tfs_corpus/infer", content=content, headers=headers)
    assert binary_outputs(response)[1]["default"] == raw


def test_v2_requests_are_counted_under_their_own_entrypoint(app, v2_core, images):
    metrics = v2_core.metrics
    name = ":tensorflow:serving:request_latency_count"
    before = metric_value(metrics.render(), name, model_name="mnist", entrypoint="V2_REST")
    body = images_request(images[:1])
    assert call(app, "POST", "/v2/models/mnist/infer", json=body).status_code == 200
    after = metric_value(metrics.render(), name, model_name="mnist", entrypoint="V2_REST")
    assert after == before + 1


# -- client mistakes, limits -------------------------------------------------------------------


def _mnist_input(**overrides) -> dict:
    """A small `images` request ([1, 2, 2], flat data) with the tensor's fields overridden."""
    body = images_request(np.array([[[0.1, 0.2], [0.3, 0.4]]], np.float32))
    body["inputs"][0].update({"data": [0.1, 0.2, 0.3, 0.4], **overrides})
    return body


def _corpus_request(signature: str, datatype: str, data: list) -> dict:
    """A request for one of tfs_corpus's identity signatures (input `default`)."""
    tensor = {"name": "default", "datatype": datatype, "shape": [len(data)], "data": data}
    return {"parameters": {"signature_name": signature}, "inputs": [tensor]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("mnist", _mnist_input(data=[0.1, 0.2, 0.3]), 400, "holds 4 elements but `data` holds 3"),
        ("mnist", _mnist_input(shape=[1, -2, 2]), 400, "list of non-negative integers"),
        ("mnist", _mnist_input(datatype="FP8"), 400, "datatype 'FP8' is not supported"),
        (
            "mnist",
            _mnist_input(datatype="INT64", data=[1, 2, 3, 4]),
            400,
            "signature 'serving_default' takes FP32",
        ),
        (
            "mnist",
            _mnist_input(data=[0.1, "x", 0.3, 0.4]),
            400,
            "FP32 data must be numbers, got 'x'",
        ),
        (
            "mnist",
            _mnist_input(data=[0.1, True, 0.3, 0.4]),
            400,
            "FP32 data must be numbers, got true",
        ),
        ("mnist", _mnist_input(data=[1e39, 0, 0, 0]), 400, "out of the range of FP32"),
        (
            "mnist",
            _mnist_input(name="pixels"),
            400,
            "images(feed name: serving_default_images:0) not found in request",
        ),
        ("mnist", {"inputs": "images"}, 400, '"inputs", a JSON array'),
        (
            "mnist",
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1]}]},
            400,
            'needs "data"',
        ),
        (
            "mnist",
            {**_mnist_input(), "outputs": [{"name": "logits"}]},
            400,
            "output tensor alias not found in signature: logits",
        ),
        (
            "mnist",
            {**_mnist_input(), "parameters": {"signature_name": "nope"}},
            400,
            '"nope" not found',
        ),
        ("mnist", {**_mnist_input(), "parameters": {"signature_name": 3}}, 400, "must be a string"),
        ("mnist", {**_mnist_input(), "id": 5}, 400, '"id" must be a string'),
        (
            "mnist",
            {
                **_mnist_input(),
                "outputs": [{"name": "classes", "parameters": {"classification": 3}}],
            },
            400,
            "classification extension",
        ),
        (
            "tfs_corpus",
            _corpus_request("int8", "INT8", [1, 300]),
            400,
            "300 is out of the range of INT8",
        ),
        (
            "tfs_corpus",
            _corpus_request("int32", "INT32", [1.5]),
            400,
            "INT32 data must be integers, got 1.5",
        ),
        (
            "tfs_corpus",
            _corpus_request("complex64_output", "FP32", [1.0]),
            501,
            "cannot represent",
        ),
        ("nope", _mnist_input(), 404, "Latest(nope)"),
    ],
)
def test_client_mistakes_are_4xx_saying_what_to_fix(app, path, body, status, message):
    response = call(app, "POST", f"/v2/models/{path}/infer", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[1, 2]", {}, "must be a JSON object"),
        (b"{}", {HEADER_LENGTH: "9"}, "Inference-Header-Content-Length '9'"),
        (b'{"inputs": []}xyz', {HEADER_LENGTH: "14"}, "3 bytes after the JSON"),
        (b'{"inputs": []}', {"Content-Encoding": "gzip"}, "send the body uncompressed"),
    ],
)
def test_malformed_bodies_are_400(app, content, headers, message):
    response = call(app, "POST", "/v2/models/mnist/infer", content=content, headers=headers)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_binary_sizes_must_add_up(app):
    document = {
        "inputs": [
            {
                "name": "images",
                "datatype": "FP32",
                "shape": [1, 2, 2],
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
    content, headers = binary_body(document, [b"\0" * 12])
    response = call(app, "POST", "/v2/models/mnist/infer", content=content, headers=headers)
    assert response.status_code == 400
    assert "runs past the end" in response.json()["error"]
    document["inputs"][0]["parameters"]["binary_data_size"] = 12
    content, headers = binary_body(document, [b"\0" * 12])
    response = call(app, "POST", "/v2/models/mnist/infer", content=content, headers=headers)
    assert "takes 16 bytes but its raw data has 12" in response.json()["error"]


def test_the_servers_limits_apply(app, v2_core):
    big = np.zeros((MAX_REQUEST_TENSOR_BYTES // 8 + 1,), np.float64)
    document = {
        "parameters": {"signature_name": "double"},
        "inputs": [
            {
                "name": "default",
                "datatype": "FP64",
                "shape": [big.size],
                "parameters": {"binary_data_size": big.nbytes},
            }
        ],
    }
    content, headers = binary_body(document, [big.tobytes()])
    response = call(app, "POST", "/v2/models/tfs_corpus/infer", content=content, headers=headers)
    assert response.status_code == 400
    assert "--max_request_tensor_bytes" in response.json()["error"]
    small = V2RestApp(v2_core.data_plane, timeout_seconds=30, max_body_bytes=100)
    response = call(small, "POST", "/v2/models/mnist/infer", content=b" " * 101)
    assert response.status_code == 413
    assert "--rest_api_max_body_bytes" in response.json()["error"]


def test_a_draining_server_is_live_but_not_ready(v2_core):
    draining = V2RestApp(
        v2_core.data_plane, timeout_seconds=30, max_body_bytes=0, accepting=lambda: False
    )
    assert call(draining, "GET", "/v2/health/live").status_code == 200
    assert call(draining, "GET", "/v2/health/ready").status_code == 503
    response = call(draining, "POST", "/v2/models/mnist/infer", json=_mnist_input())
    assert response.status_code == 503
    assert response.json() == {"error": "Server is shutting down"}
