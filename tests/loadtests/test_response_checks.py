"""The checks that make a wrong 200 count as a failure in the load report."""

import pytest

from loadtests.responses import (
    check_feedback_body,
    check_model_list_body,
    check_model_status_body,
    check_predict_body,
    describe_http_error,
)


def prediction(label=7, prediction_id="p-1"):
    return {
        "class": label,
        "confidence": 0.9,
        "probabilities": [0.01] * 10,
        "prediction_id": prediction_id,
    }


def test_a_well_formed_prediction_passes():
    assert check_predict_body({"predictions": [prediction(), prediction(3, "p-2")]}, 2) is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"error": {"code": "x"}}, "no 'predictions' list"),
        ({"predictions": [prediction()]}, "expected 2 predictions, got 1"),
        ({"predictions": [prediction(), prediction(11)]}, "prediction 1 has class 11"),
        ({"predictions": [prediction(), prediction(prediction_id="")]}, "no prediction_id"),
    ],
)
def test_a_malformed_prediction_fails_with_the_reason(document, message):
    assert message in check_predict_body(document, 2)


def test_feedback_must_be_accepted_with_an_outcome_per_item():
    good = {"accepted": 1, "results": [{"prediction_id": "p", "outcome": "correct"}]}
    refused = {"accepted": 0, "results": []}
    odd = {"accepted": 1, "results": [{"prediction_id": "p", "outcome": "maybe"}]}

    assert check_feedback_body(good, 1) is None
    assert check_feedback_body(refused, 1) == "expected 1 feedback items accepted, got 0"
    assert "unexpected feedback outcomes ['maybe']" in check_feedback_body(odd, 1)


def test_http_errors_quote_the_gateway_message():
    body = '{"error": {"code": "invalid_input", "message": "expected 784 pixels"}}'

    assert describe_http_error(400, body) == f"HTTP 400: {body}"
    assert describe_http_error(503, "") == "HTTP 503"
    assert len(describe_http_error(500, "x" * 1000)) == len("HTTP 500: ") + 200


def test_model_status_needs_an_available_version():
    available = {"name": "mnist", "versions": [{"version": 2, "state": "AVAILABLE"}]}
    loading = {"name": "mnist", "versions": [{"version": 2, "state": "LOADING"}]}

    assert check_model_status_body(available, "mnist") is None
    assert check_model_status_body(loading, "mnist") == (
        "model mnist has no AVAILABLE version (states ['LOADING'])"
    )
    assert "does not describe model 'fashion'" in check_model_status_body(available, "fashion")


def test_model_list_must_name_the_model_under_load():
    listing = {"models": [{"name": "mnist", "versions": []}]}

    assert check_model_list_body(listing, "mnist") is None
    missing = "model list ['mnist'] does not include 'other'"
    assert check_model_list_body(listing, "other") == missing
    assert check_model_list_body([], "mnist") == "model list response has no 'models' list"
