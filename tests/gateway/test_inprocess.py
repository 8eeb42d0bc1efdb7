"""Routes, validation, feedback and auth, in-process over a fake upstream (no model server).

Each test names the defect of issue 15 it guards where it is a regression test. The same
routes run over the real model server in test_api.py and tests/e2e.
"""

from __future__ import annotations

import base64
import json
import string
import time

import numpy as np
import pytest

from gateway.prediction_ids import PredictionIdSigner
from tests.fixtures.gateway import TEST_FEEDBACK_SECRET
from tests.fixtures.processes import free_port
from tests.gateway.fakes import FakeUpstream, expected_class

PREDICT = "/v1/models/mnist/predict"
PREDICT_IMAGE = "/v1/models/mnist/predict/image"
ONE = {"instances": [[[0.0] * 28] * 28]}
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"], "every error says what to fix"
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def predict_ids(client, count: int = 1) -> list[str]:
    instances = [np.full((28, 28), index / 784.0).tolist() for index in range(count)]
    response = client.post(PREDICT, json={"instances": instances})
    assert response.status_code == 200, response.text
    return [p["prediction_id"] for p in response.json()["predictions"]]


def test_predict_answers_from_the_upstream(inprocess) -> None:
    upstream = FakeUpstream()
    client = inprocess(upstream)
    digit = np.zeros((28, 28))
    digit[10:18, 13:15] = 0.25  # 4 units of ink: the fake answers class 4
    response = client.post(PREDICT, json={"instances": [digit.tolist()]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class"] == 4 == expected_class(upstream.batches[0])


# --- 1. feedback is counted once per prediction id -------------------------------------------


def feedback_total(client) -> float:
    text = client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_feedback_total{")
    )


def test_replayed_feedback_is_counted_once_and_reported(inprocess) -> None:
    client = inprocess()
    first, second = predict_ids(client, 2)
    item = {"prediction_id": first, "label": 3}

    scored = client.post("/v1/feedback", json=item)
    replay = client.post("/v1/feedback", json=item)
    copies = client.post("/v1/feedback", json=[item] * 1000)
    mixed = client.post("/v1/feedback", json=[item, {"prediction_id": second, "label": 3}])

    assert scored.status_code == 200 and scored.json()["accepted"] == 1
    assert "scored already" in assert_error(replay, 409, "duplicate_feedback")["message"]
    assert_error(copies, 409, "duplicate_feedback")
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["accepted"] == 1 and mixed.json()["duplicates"] == 1
    assert mixed.json()["results"][0]["outcome"] == "duplicate"
    assert feedback_total(client) == 2, "only the two distinct ids count"
    assert (
        'gateway_feedback_rejected_total{reason="duplicate"} 1002.0' in client.get("/metrics").text
    )


def test_a_list_of_copies_of_a_new_id_scores_it_once(inprocess) -> None:
    client = inprocess()
    (prediction_id,) = predict_ids(client)
    response = client.post("/v1/feedback", json=[{"prediction_id": prediction_id, "label": 0}] * 50)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1 and response.json()["duplicates"] == 49
    assert feedback_total(client) == 1


def test_an_expired_prediction_id_is_a_410_that_says_so(inprocess) -> None:
    client = inprocess(feedback_max_age=3600)
    an_hour_and_more_ago = time.time() - 3700
    old = PredictionIdSigner(TEST_FEEDBACK_SECRET, 3600, clock=lambda: an_hour_and_more_ago)
    expired_id = old.issue("mnist", 1, 3)
    response = client.post("/v1/feedback", json={"prediction_id": expired_id, "label": 3})
    assert (
        "GATEWAY_FEEDBACK_MAX_AGE" in assert_error(response, 410, "prediction_expired")["message"]
    )
    assert feedback_total(client) == 0


def test_local_deduplication_says_so_in_readyz(inprocess) -> None:
    ready = inprocess().get("/readyz").json()
    assert ready["feedback_dedup"] == "local"
    assert any("GATEWAY_REDIS_URL" in warning for warning in ready["warnings"])


# --- 2. an altered id never verifies ------------------------------------------------------------


def alterations(prediction_id: str) -> dict[str, str]:
    payload, signature = prediction_id.split(".")
    last = BASE64URL.index(signature[-1])
    return {
        "bang-in-payload": f"{payload[:5]}!!{payload[5:]}.{signature}",
        "padding": f"{payload}.{signature}=",
        "padding-payload": f"{payload}==.{signature}",
        "symbols-in-signature": f"{payload}.{signature[:6]}@#${signature[6:]}",
        # The last character's low bits are unused: this one decodes to the same bytes.
        "unused-bits": f"{payload}.{signature[:-1]}{BASE64URL[last ^ 1]}",
        "space": f" {prediction_id}",
    }


@pytest.mark.parametrize(
    "alteration",
    [
        "bang-in-payload",
        "padding",
        "padding-payload",
        "symbols-in-signature",
        "unused-bits",
        "space",
    ],
)
def test_an_altered_prediction_id_is_a_400(inprocess, alteration: str) -> None:
    client = inprocess()
    (prediction_id,) = predict_ids(client)
    altered = alterations(prediction_id)[alteration]
    response = client.post("/v1/feedback", json={"prediction_id": altered, "label": 1})
    assert_error(response, 400, "malformed_request")
    assert feedback_total(client) == 0


# --- 3. labels are integers 0-9 ------------------------------------------------------------------


@pytest.mark.parametrize("label", [True, False, "7", 7.0, 10, -1, None])
def test_a_label_that_is_not_an_integer_0_to_9_is_a_422(inprocess, label) -> None:
    client = inprocess()
    (prediction_id,) = predict_ids(client)
    response = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})
    assert_error(response, 422, "invalid_input")
    assert feedback_total(client) == 0


# --- 7. bad pins and bad envelopes are 4xx; a crash is still a well-formed answer ---------------


@pytest.mark.parametrize(
    "query",
    ["version=9223372036854775808", "version=\u0663", "version=\uff11", "version=0",
     "version=-1", "version=1e3", "label=", f"label={'x' * 65}", "version=1&label=stable"],
)  # fmt: skip
def test_bad_pins_are_a_422(inprocess, query: str) -> None:
    assert_error(inprocess().post(f"{PREDICT}?{query}", json=ONE), 422, "invalid_input")


@pytest.mark.parametrize("value_range", [{}, [], None, 1, "auto", True])
def test_a_value_range_of_the_wrong_type_is_a_422(inprocess, value_range) -> None:
    response = inprocess().post(PREDICT, json={**ONE, "value_range": value_range})
    assert '"0-1" or "0-255"' in assert_error(response, 422, "invalid_input")["message"]


def test_an_unexpected_error_is_a_500_in_the_error_shape_that_closes(inprocess) -> None:
    upstream = FakeUpstream()
    upstream.error = RuntimeError("a bug")
    response = inprocess(upstream).post(PREDICT, json=ONE)
    assert_error(response, 500, "internal")
    assert response.headers["connection"] == "close"
    assert "a bug" not in response.text


# --- 8. a model the gateway does not serve is a 404, whatever its length --------------------------


@pytest.mark.parametrize("length", [5, 65, 10_000, 20_000])
def test_an_unknown_or_huge_model_name_is_a_404_without_an_upstream_call(
    inprocess, length: int
) -> None:
    upstream = FakeUpstream()
    client = inprocess(upstream)
    name = "m" * length
    for response in (
        client.post(f"/v1/models/{name}/predict", json=ONE),
        client.get(f"/v1/models/{name}"),
    ):
        error = assert_error(response, 404, "model_not_found")
        assert len(error["message"]) < 200, "the message does not echo 20,000 characters"
    assert not upstream.batches


# --- 9. an oversized feedback body is a 413 like the predict routes' ------------------------------


def test_an_oversized_chunked_feedback_body_is_a_413(inprocess) -> None:
    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(8):
            yield b" " * (1024 * 1024)

    response = inprocess().post(
        "/v1/feedback", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


# --- 10. the key is checked before the body is read, on every /v1 path -------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/feedback"), ("POST", PREDICT), ("POST", PREDICT_IMAGE), ("GET", "/v1/models"),
     ("GET", "/v1/models/mnist"), ("POST", "/v1/a-route-added-later")],
)  # fmt: skip
def test_without_a_key_every_v1_path_is_a_401_before_the_body(inprocess, method, path) -> None:
    client = inprocess(api_keys="key-one,key-two")
    response = client.request(
        method, path, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 401, "unauthenticated")
    wrong = client.request(method, path, content=b"{not json", headers={"x-api-key": "nope"})
    assert_error(wrong, 403, "forbidden")


def test_a_valid_key_or_bearer_token_passes(inprocess) -> None:
    client = inprocess(api_keys="key-one,key-two")
    assert client.post(PREDICT, json=ONE, headers={"x-api-key": "key-two"}).status_code == 200
    bearer = client.get("/v1/models", headers={"authorization": "Bearer key-one"})
    assert bearer.status_code == 200
    assert [client.get(path).status_code for path in ("/healthz", "/readyz")] == [200, 200]


# --- 11. a boolean among the numbers is a 422 ---------------------------------------------------


@pytest.mark.parametrize("flat", [True, False])
def test_booleans_mixed_into_an_array_are_a_422(inprocess, flat: bool) -> None:
    pixels = [0] * 783 + [True]
    instance = pixels if flat else [pixels[row * 28 : row * 28 + 28] for row in range(28)]
    response = inprocess().post(PREDICT, json={"instances": [instance]})
    assert "true/false" in assert_error(response, 422, "invalid_input")["message"]


def test_a_b64_string_with_true_inside_is_still_an_image(inprocess) -> None:
    """The boolean pre-check looks at the raw body; base64 text may contain 'true'."""
    response = inprocess().post(
        PREDICT, json={"instances": [{"b64": base64.b64encode(b"trueAAfalse").decode()}]}
    )
    assert "decoded" in assert_error(response, 422)["message"]


# --- 13, 14. secrets, docs and internal addresses in production ---------------------------------


def production(**settings: object) -> dict[str, object]:
    return {"env": "production", "feedback_dedup": "local", **settings}


def test_production_serves_no_docs_unless_enabled(inprocess) -> None:
    client = inprocess(**production(api_keys="k"))
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        assert_error(client.get(path), 404)
    enabled = inprocess(**production(api_keys="k", docs_enabled=True))
    assert enabled.get("/openapi.json").status_code == 200


def test_the_docs_ui_comes_from_the_installed_package_not_a_cdn(inprocess) -> None:
    client = inprocess()
    page = client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text, "no CDN"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/assets/{asset}" in page.text
        assert client.get(f"/docs/assets/{asset}").status_code == 200


def test_metrics_can_require_their_own_key(inprocess) -> None:
    client = inprocess(metrics_api_keys="scraper-key")
    assert_error(client.get("/metrics"), 401)
    scraped = client.get("/metrics", headers={"authorization": "Bearer scraper-key"})
    assert scraped.status_code == 200 and "gateway_requests_total" in scraped.text


def test_upstream_faults_keep_internal_addresses_in_the_log(inprocess, caplog) -> None:
    """The real gRPC client to a closed loopback port: UNAVAILABLE names the address."""
    port = free_port()
    client = inprocess(grpc=True, serving_target=f"127.0.0.1:{port}")
    ready, predicted = client.get("/readyz"), client.post(PREDICT, json=ONE)
    assert ready.status_code == 503 and predicted.status_code == 503
    for response in (ready, predicted):
        assert str(port) not in response.text and "127.0.0.1" not in response.text
        assert response.headers["retry-after"]
    assert str(port) in caplog.text, "the address is logged for operators"


def test_the_schema_documents_every_error_and_the_envelope(inprocess) -> None:
    spec = inprocess(max_batch_size=16).get("/openapi.json").json()
    predict_op = spec["paths"]["/v1/models/{model}/predict"]["post"]
    for status in ("400", "404", "413", "415", "422", "503", "504"):
        schema = predict_op["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    variants = spec["components"]["schemas"]["PredictRequest"]["oneOf"]
    assert len(variants) == 2
    unit = spec["components"]["schemas"]["PredictRequestUnitRange"]["properties"]
    assert unit["instances"]["maxItems"] == 16
    model = next(p for p in predict_op["parameters"] if p["name"] == "model")
    assert model["schema"] == {"type": "string", "enum": ["mnist"]}
    image = spec["paths"]["/v1/models/{model}/predict/image"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/webp"} <= set(image)
    assert json.dumps(spec).count("ErrorResponse") > 20
