"""Every route and error status, against the real gateway and the real embedded server.

One session gateway serves these tests (small limits: 1 MB bodies, 4 MP images, 16
instances); tests that need their own gateway are in test_api_processes.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.gateway.images import encode, printed_digit

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/mnist/predict"
PREDICT_IMAGE = "/v1/models/mnist/predict/image"


@pytest.fixture(scope="module")
def client(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def digits(mnist_test_images) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_test_images
    return images[:16], labels[:16]


def png_of(image: np.ndarray) -> bytes:
    return encode(Image.fromarray(image.astype(np.uint8)))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"], "every error says what to fix"
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["available_versions"] == [1]


def test_predict_arrays_reads_real_digits(client, digits) -> None:
    images, labels = digits
    response = client.post(
        PREDICT,
        json={"instances": (images / 255.0).tolist()},
        headers={"X-Request-ID": "req-123"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mnist" and body["version"] == 1
    assert body["request_id"] == "req-123" == response.headers["x-request-id"]
    predictions = body["predictions"]
    assert len(predictions) == len(labels)
    for prediction in predictions:
        probabilities = prediction["probabilities"]
        assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert prediction["class"] == int(np.argmax(probabilities))
        assert prediction["confidence"] == pytest.approx(max(probabilities))
    classes = np.array([p["class"] for p in predictions])
    assert (classes == labels).mean() >= 0.8
    assert len({p["prediction_id"] for p in predictions}) == len(predictions)


def test_flat_0_255_arrays_and_b64_images_give_the_same_answer(client, digits) -> None:
    images, _ = digits
    scaled = client.post(PREDICT, json={"instances": (images[:4] / 255.0).tolist()}).json()
    flat = client.post(
        PREDICT,
        json={"instances": images[:4].reshape(4, 784).tolist(), "value_range": "0-255"},
    ).json()
    as_b64 = client.post(
        PREDICT,
        json={"instances": [{"b64": base64.b64encode(png_of(i)).decode()} for i in images[:4]]},
    ).json()

    for a, b, c in zip(
        scaled["predictions"], flat["predictions"], as_b64["predictions"], strict=True
    ):
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)
        assert a["class"] == c["class"]


def test_predict_image_multipart_and_raw_bodies(client, digits) -> None:
    images, labels = digits
    png = png_of(images[0])
    multipart = client.post(PREDICT_IMAGE, files={"file": ("digit.png", png, "image/png")})
    raw = client.post(PREDICT_IMAGE, content=png, headers={"Content-Type": "image/png"})
    photo = printed_digit(7, "DejaVuSans-Bold.ttf", 120, 5, 70)
    jpeg = client.post(PREDICT_IMAGE, content=photo, headers={"Content-Type": "image/jpeg"})

    for response in (multipart, raw, jpeg):
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 1
    assert multipart.json()["predictions"][0]["class"] == int(labels[0])
    assert raw.json()["predictions"][0]["class"] == int(labels[0])


def test_version_and_label_pins(client, digits) -> None:
    body = {"instances": (digits[0][:1] / 255.0).tolist()}
    assert client.post(f"{PREDICT}?version=1", json=body).json()["version"] == 1
    assert_error(client.post(f"{PREDICT}?version=99", json=body), 404, "model_not_found")
    assert_error(client.post(f"{PREDICT}?label=nightly", json=body), 404, "model_not_found")
    assert_error(client.post("/v1/models/nope/predict", json=body), 404, "model_not_found")
    assert_error(client.post(f"{PREDICT}?version=1&label=stable", json=body), 422)
    assert_error(client.post(f"{PREDICT}?version=zero", json=body), 422)


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b'{"instances": [[0.1, 0.2]', 400, "JSON"),
        (b"[1, 2, 3]", 422, "JSON object"),
        (b'{"instances": []}', 422, "non-empty"),
        (json.dumps({"instances": [[0.5] * 783]}).encode(), 422, "shape [783]"),
        (json.dumps({"instances": [[[0.5] * 28] * 27]}).encode(), 422, "shape [27, 28]"),
        (json.dumps({"instances": [["a"] * 784]}).encode(), 422, "numeric"),
        (b'{"instances": [[NaN' + b", 0.5" * 783 + b"]]}", 400, "NaN"),
        (b'{"instances": [[Infinity' + b", 0.5" * 783 + b"]]}", 400, "infinity"),
        (b'{"instances": [[1e400' + b", 0.5" * 783 + b"]]}", 400, "infinity"),
        (json.dumps({"instances": [[255] * 784]}).encode(), 422, "value_range"),
        (json.dumps({"instances": [[-1] * 784], "value_range": "0-255"}).encode(), 422, "[-1"),
        (json.dumps({"instances": [[1] * 784], "value_range": "auto"}).encode(), 422, "0-255"),
        (json.dumps({"instances": [{"b64": "***"}]}).encode(), 422, "base64"),
        (json.dumps({"instances": [{"b64": "aGVsbG8="}]}).encode(), 422, "decoded"),
        (json.dumps({"instances": [7]}).encode(), 422, "int"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "empty",
        "783",
        "27x28",
        "strings",
        "nan",
        "inf",
        "overflow",
        "0-255-undeclared",
        "negative",
        "bad-range",
        "bad-base64",
        "not-an-image",
        "scalar",
    ],
)
def test_bad_json_input_is_a_clear_4xx(client, content, status, fragment) -> None:
    response = client.post(PREDICT, content=content, headers={"Content-Type": "application/json"})
    error = assert_error(response, status)
    assert fragment in error["message"]


def test_batch_over_the_limit_is_413(client) -> None:
    response = client.post(PREDICT, json={"instances": [[0.0] * 784] * 17})
    assert "16" in assert_error(response, 413, "payload_too_large")["message"]


def test_body_over_the_limit_is_413_declared_or_streamed(client) -> None:
    big = b" " * 1_200_000
    declared = client.post(PREDICT, content=big, headers={"Content-Type": "application/json"})
    assert_error(declared, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(40):
            yield b" " * 64_000

    streamed = client.post(PREDICT_IMAGE, content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(streamed, 413, "payload_too_large")


def test_image_over_the_pixel_limit_is_413(client) -> None:
    bomb = encode(Image.new("1", (2500, 2000), 1))  # 5 MP of white: a few KB as PNG
    assert len(bomb) < 100_000
    response = client.post(PREDICT_IMAGE, content=bomb, headers={"Content-Type": "image/png"})
    assert "pixels" in assert_error(response, 413)["message"]


def test_image_errors(client) -> None:
    raw = {"Content-Type": "image/png"}
    assert_error(client.post(PREDICT_IMAGE, content=b"garbage", headers=raw), 422)
    blank = encode(Image.new("L", (64, 64), 255))
    assert (
        "no digit"
        in assert_error(client.post(PREDICT_IMAGE, content=blank, headers=raw), 422)["message"]
    )
    text = client.post(PREDICT_IMAGE, content=b"7", headers={"Content-Type": "text/plain"})
    assert_error(text, 415, "unsupported_media_type")
    tiff = client.post(
        PREDICT_IMAGE,
        files={"file": ("d.tiff", encode(Image.new("L", (8, 8)), "TIFF"), "image/tiff")},
    )
    assert_error(tiff, 415)
    no_file = client.post(PREDICT_IMAGE, files={"other": ("d.png", blank, "image/png")})
    assert '"file"' in assert_error(no_file, 422)["message"]
    form = client.post(PREDICT, content=b"a=1", headers={"Content-Type": "text/plain"})
    assert_error(form, 415)


def test_feedback_scores_signed_ids(client, digits) -> None:
    images, labels = digits
    predictions = client.post(PREDICT, json={"instances": (images[:5] / 255.0).tolist()}).json()[
        "predictions"
    ]
    items = [
        {"prediction_id": p["prediction_id"], "label": int(label)}
        for p, label in zip(predictions[:4], labels[:4], strict=True)
    ]
    wrong = {
        "prediction_id": predictions[4]["prediction_id"],
        "label": (predictions[4]["class"] + 1) % 10,
    }

    batch = client.post("/v1/feedback", json=items)
    single = client.post("/v1/feedback", json=wrong)

    assert batch.status_code == 200, batch.text
    expected = [
        "correct" if p["class"] == int(y) else "incorrect"
        for p, y in zip(predictions[:4], labels[:4], strict=True)
    ]
    assert batch.json()["accepted"] == 4
    assert [r["outcome"] for r in batch.json()["results"]] == expected
    assert single.json() == {
        "accepted": 1,
        "duplicates": 0,
        "results": [{"prediction_id": wrong["prediction_id"], "outcome": "incorrect"}],
    }
    metrics = client.get("/metrics").text
    assert 'gateway_feedback_total{model="mnist",outcome="incorrect",version="1"}' in metrics


def test_forged_or_malformed_prediction_ids_are_400(client, digits) -> None:
    prediction = client.post(PREDICT, json={"instances": (digits[0][:1] / 255.0).tolist()}).json()[
        "predictions"
    ][0]
    payload, signature = prediction["prediction_id"].split(".")
    claim = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claim["c"] = (claim["c"] + 1) % 10  # claim another class, keep the old signature
    forged_payload = base64.urlsafe_b64encode(json.dumps(claim).encode()).rstrip(b"=").decode()

    for bad_id in (f"{forged_payload}.{signature}", "not-an-id", "a.b.c", f"{payload}."):
        response = client.post("/v1/feedback", json={"prediction_id": bad_id, "label": 1})
        assert_error(response, 400, "malformed_request")
    # One bad id refuses the whole batch: nothing is half-counted.
    mixed = [
        {"prediction_id": prediction["prediction_id"], "label": 1},
        {"prediction_id": "forged.id", "label": 1},
    ]
    assert_error(client.post("/v1/feedback", json=mixed), 400)
    out_of_range = {"prediction_id": prediction["prediction_id"], "label": 10}
    assert_error(client.post("/v1/feedback", json=out_of_range), 422, "invalid_input")


def test_models_routes_show_versions_and_signature(client) -> None:
    listing = client.get("/v1/models")
    detail = client.get("/v1/models/mnist")

    assert listing.status_code == 200 and detail.status_code == 200
    assert [m["name"] for m in listing.json()["models"]] == ["mnist"]
    model = detail.json()
    assert [(v["version"], v["state"]) for v in model["versions"]] == [(1, "AVAILABLE")]
    serving_default = model["signatures"]["serving_default"]
    assert serving_default["inputs"]["images"] == {"dtype": "DT_FLOAT", "shape": [-1, 28, 28]}
    assert serving_default["outputs"]["probabilities"]["shape"] == [-1, 10]
    assert_error(client.get("/v1/models/nope"), 404, "model_not_found")


def test_metrics_expose_the_contract_names(client, digits) -> None:
    client.post(PREDICT, json={"instances": (digits[0][:2] / 255.0).tolist()})
    client.post(f"{PREDICT}?version=99", json={"instances": (digits[0][:1] / 255.0).tolist()})
    client.get("/v1/models/mnist")
    text = client.get("/metrics").text
    # One rule for every upstream call: successes and failures, Predict and status calls.
    for name in (
        'gateway_upstream_duration_seconds_count{code="NOT_FOUND",model="mnist",version="unknown"}',
        'gateway_upstream_info_duration_seconds_count{code="OK",method="GetModelStatus",model="mnist"}',
        'gateway_upstream_info_duration_seconds_count{code="OK",method="GetModelMetadata",model="mnist"}',
    ):
        assert name in text, name
    for name in (
        'gateway_requests_total{method="POST",route="/v1/models/{model}/predict",status="200"}',
        'gateway_request_duration_seconds_bucket{le="0.005",route="/v1/models/{model}/predict"}',
        'gateway_preprocess_duration_seconds_count{input_kind="array"}',
        'gateway_upstream_duration_seconds_count{code="OK",model="mnist",version="1"}',
        'gateway_predictions_total{class="',
        'gateway_prediction_confidence_bucket{le="0.5",model="mnist",version="1"}',
    ):
        assert name in text, name


def test_openapi_docs(client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in (PREDICT.replace("mnist", "{model}"), "/v1/feedback", "/v1/models", "/readyz"):
        assert path.replace("mnist", "{model}") in spec["paths"]
    assert "PredictRequest" in spec["components"]["schemas"]
    image_body = spec["paths"]["/v1/models/{model}/predict/image"]["post"]["requestBody"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(image_body["content"])


def test_unknown_route_has_the_error_shape(client) -> None:
    assert_error(client.get("/v2/nothing"), 404, "not_found")
