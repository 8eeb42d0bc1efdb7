"""The TF Serving REST adapter against the data plane: its limits and extensions, and the
paths the conformance corpus does not reach (timeouts, shutdown, CORS, metrics)."""

from __future__ import annotations

import json

import numpy as np

from tests.serving.protocol.conftest import call, rest_app


def _images(count: int) -> str:
    return json.dumps({"instances": np.zeros((count, 28, 28)).tolist()})


def test_a_predict_round_trip_is_tf_servings_text(rest):
    response = rest("POST", "/v1/models/mnist:predict", _images(2))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.text.startswith('{\n    "predictions": [\n        {\n')
    body = response.json()
    assert len(body["predictions"]) == 2
    assert set(body["predictions"][0]) == {"classes", "probabilities"}


def test_a_body_over_the_limit_is_413_in_tf_servings_error_shape(core):
    app = rest_app(core, max_body_bytes=1000)
    response = call(app, "POST", "/v1/models/mnist:predict", _images(1))
    assert response.status_code == 413
    assert response.json() == {
        "error": "Request body is larger than this server's limit of 1000 bytes "
        "(--rest_api_max_body_bytes)"
    }
    assert call(app, "GET", "/v1/models/mnist").status_code == 200  # still serving


def test_tensors_over_the_decoded_size_limit_are_refused(rest):
    # 1 MiB limit in the fixture: 400 images of 784 float32 are 1.25 MB once decoded.
    response = rest("POST", "/v1/models/mnist:predict", _images(400))
    assert response.status_code == 400
    assert "more than this server's limit of 1048576 bytes" in response.json()["error"]


def test_a_request_over_the_timeout_is_504_and_the_server_goes_on(core):
    app = rest_app(core, timeout_seconds=0.05)
    slow = json.dumps({"inputs": {"iterations": 20000}})  # about half a second of products
    response = call(app, "POST", "/v1/models/spin:predict", slow)
    assert response.status_code == 504
    assert response.json() == {"error": "Deadline Exceeded"}
    # The same data plane serves on (an app with a timeout a busy machine cannot miss).
    assert call(rest_app(core), "POST", "/v1/models/mnist:predict", _images(1)).status_code == 200


def test_while_draining_requests_are_503(core):
    app = rest_app(core, accepting=lambda: False)
    response = call(app, "POST", "/v1/models/mnist:predict", _images(1))
    assert response.status_code == 503
    assert response.json() == {"error": "Server is shutting down"}


def test_cors_headers_only_with_the_flag(core):
    plain = call(rest_app(core), "GET", "/v1/models/mnist")
    assert "access-control-allow-origin" not in plain.headers
    cors = rest_app(core, enable_cors=True)
    response = call(cors, "GET", "/v1/models/mnist")
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "POST, GET"
    preflight = call(cors, "OPTIONS", "/v1/models/mnist:predict", origin="https://app.example")
    assert (preflight.status_code, preflight.text) == (200, "")


def test_the_metrics_page_counts_rest_requests(rest):
    rest("POST", "/v1/models/mnist:predict", _images(1))
    rest("POST", "/v1/models/nope:predict", _images(1))
    page = rest("GET", "/monitoring/prometheus/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    text = page.text
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} 1' in text
    # http_server.cc times OK requests under the path's verb, and counts GETs too.
    latency = ':tensorflow:serving:request_latency_count{model_name="mnist",API="predict",'
    assert latency + 'entrypoint="REST"} 1' in text
    rest("GET", "/v1/models/mnist")
    text = rest("GET", "/monitoring/prometheus/metrics").text
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 2' in text


def test_an_unexpected_fault_is_a_well_formed_500(core, monkeypatch):
    from serving.protocol import tfs_json

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tfs_json, "outputs_to_json", broken)
    app = rest_app(core)
    response = call(app, "POST", "/v1/models/mnist:predict", _images(1))
    assert response.status_code == 500
    assert response.json() == {"error": "RuntimeError: boom"}
    assert call(app, "GET", "/v1/models/mnist").status_code == 200
