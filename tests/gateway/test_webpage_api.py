"""What the web page needs from the gateway, without a browser: the page and its files,
the 28x28 input on request, version labels in /v1/models, and online accuracy read from
Prometheus' recording rule (a real Prometheus, and a closed port for one that is gone)."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from gateway.accuracy import ACCURACY_RULE, FEEDBACK_RULE, versions_from_samples
from tests.fixtures.processes import free_port
from tests.gateway.fakes import FakeUpstream
from tests.gateway.images import transparent_png

PREDICT = "/v1/models/mnist/predict"


def test_the_page_is_served_at_the_root_with_its_files_and_a_policy_against_other_origins(
    inprocess,
) -> None:
    client = inprocess(default_model="mnist")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="gateway-default-model" content="mnist">' in page.text
    assert '<meta name="gateway-api-keys" content="none">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http" not in policy  # no other origin is allowed anything
    for path in ("/ui/app.js", "/ui/style.css"):
        assert client.get(path).status_code == 200
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_with_api_keys_the_page_is_public_and_tells_the_script_to_ask_for_a_key(
    inprocess,
) -> None:
    client = inprocess(api_keys="key-one")
    page = client.get("/")
    assert page.status_code == 200
    assert '<meta name="gateway-api-keys" content="required">' in page.text
    assert client.get("/ui/app.js").status_code == 200
    assert client.get("/v1/models/mnist/accuracy").status_code == 401
    authorized = client.get("/v1/models/mnist/accuracy", headers={"X-API-Key": "key-one"})
    assert authorized.status_code == 200


def test_return_input_gives_each_prediction_the_image_the_model_saw(inprocess) -> None:
    upstream = FakeUpstream()
    client = inprocess(upstream=upstream)
    instances = np.random.default_rng(5).random((2, 28, 28)).round(3)
    response = client.post(f"{PREDICT}?return_input=true", json={"instances": instances.tolist()})
    assert response.status_code == 200, response.text
    seen = np.array([p["input"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(seen, upstream.batches[-1], atol=5e-5)
    np.testing.assert_allclose(seen, instances, atol=5e-5)

    image = client.post(
        f"{PREDICT}/image?return_input=1",
        files={"file": ("canvas.png", transparent_png(280), "image/png")},
    )
    prediction = image.json()["predictions"][0]
    assert np.array(prediction["input"]).shape == (28, 28)
    np.testing.assert_allclose(prediction["input"], upstream.batches[-1][0], atol=5e-5)

    plain = client.post(PREDICT, json={"instances": instances.tolist()})
    assert "input" not in plain.json()["predictions"][0]
    for value in ("false", "0"):
        off = client.post(f"{PREDICT}?return_input={value}", json={"instances": [[0] * 784]})
        assert "input" not in off.json()["predictions"][0]


@pytest.mark.parametrize("value", ["yes", "", "TRUE!", "2"])
def test_a_return_input_that_is_not_a_boolean_is_a_422(inprocess, value: str) -> None:
    response = inprocess().post(f"{PREDICT}?return_input={value}", json={"instances": [[0] * 784]})
    assert response.status_code == 422
    assert "return_input" in response.json()["error"]["message"]


def test_models_list_the_labels_the_model_server_resolves(inprocess) -> None:
    upstream = FakeUpstream(versions=(1, 2), labels={"stable": 1, "canary": 2, "other": 2})
    listing = inprocess(upstream=upstream).get("/v1/models").json()
    # The gateway's own labels only: "other" is not one the gateway routes to.
    assert listing["models"][0]["labels"] == {"canary": 2, "stable": 1}
    only_stable = FakeUpstream(versions=(1, 2), labels={"stable": 2})
    assert inprocess(upstream=only_stable).get("/v1/models/mnist").json()["labels"] == {"stable": 2}


def test_accuracy_without_prometheus_says_so_in_words_with_a_200(inprocess) -> None:
    body = inprocess().get("/v1/models/mnist/accuracy").json()
    assert body == {
        "model": "mnist",
        "status": "not_configured",
        "message": "online accuracy needs Prometheus: set GATEWAY_PROMETHEUS_URL",
        "window_seconds": 300,
        "versions": [],
    }


def test_accuracy_from_a_prometheus_that_is_gone_is_unreachable_without_its_address(
    inprocess,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    body = inprocess(prometheus_url=url).get("/v1/models/mnist/accuracy").json()
    assert body["status"] == "unreachable" and body["versions"] == []
    assert body["message"] == "Prometheus does not answer"


def test_accuracy_of_a_model_not_served_is_a_404(inprocess) -> None:
    response = inprocess().get("/v1/models/other/accuracy")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_samples_become_versions_and_an_idle_version_has_no_accuracy() -> None:
    samples = [
        {"metric": {"__name__": ACCURACY_RULE, "version": "2"}, "value": [0, "0.75"]},
        {"metric": {"__name__": FEEDBACK_RULE, "version": "2"}, "value": [0, "0.5"]},
        {"metric": {"__name__": ACCURACY_RULE, "version": "1"}, "value": [0, "NaN"]},
        {"metric": {"__name__": FEEDBACK_RULE, "version": "1"}, "value": [0, "0"]},
        {"metric": {"__name__": ACCURACY_RULE, "version": "unknown"}, "value": [0, "1"]},
    ]
    assert versions_from_samples(samples) == [
        {"version": 1, "accuracy": None, "feedback_per_second": 0.0},
        {"version": 2, "accuracy": 0.75, "feedback_per_second": 0.5},
    ]


def send_feedback(url: str, count: int, correct: int) -> None:
    """`count` predictions through the API, the first `correct` of them confirmed, the
    rest given another label."""
    instances = [[[index / 40] * 28] * 28 for index in range(count)]
    predictions = httpx.post(f"{url}{PREDICT}", json={"instances": instances}, timeout=30).json()
    items = [
        {
            "prediction_id": p["prediction_id"],
            "label": p["class"] if i < correct else (p["class"] + 1) % 10,
        }
        for i, p in enumerate(predictions["predictions"])
    ]
    assert httpx.post(f"{url}/v1/feedback", json=items, timeout=10).status_code == 200


@pytest.mark.slow
def test_accuracy_is_the_recording_rule_read_from_a_real_prometheus(
    model_server, start_gateway, start_prometheus
) -> None:
    port = free_port()
    gateway = start_gateway(model_server.grpc_target, prometheus_url=f"http://127.0.0.1:{port}")
    prometheus = start_prometheus({"gateway": f"127.0.0.1:{gateway.port}"}, port=port)
    # Both counters must exist before they rise: rate() sees increases, not first values.
    send_feedback(gateway.url, 2, correct=1)
    prometheus.wait_for("gateway_feedback_total", lambda result: len(result) == 2)
    send_feedback(gateway.url, 4, correct=3)
    rule = f'{ACCURACY_RULE}{{model="mnist",version="1"}}'
    prometheus.wait_for(
        rule, lambda result: bool(result) and math.isclose(float(result[0]["value"][1]), 0.75)
    )
    body = httpx.get(f"{gateway.url}/v1/models/mnist/accuracy", timeout=10).json()
    assert body["status"] == "ok" and body["message"] == ""
    [version] = body["versions"]
    assert version["version"] == 1
    assert version["accuracy"] == pytest.approx(0.75)
    assert version["feedback_per_second"] > 0
