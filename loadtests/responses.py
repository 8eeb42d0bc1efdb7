"""Checks of the gateway's responses, so a load run counts a wrong answer as a failure.

A 200 with a malformed body is a failure too: a gateway that answers fast but wrongly must
not pass its SLOs. Each check returns None when the response is right, or a message saying
what was wrong, which Locust records as the failure's text.
"""

from __future__ import annotations

from typing import Any

MAX_ERROR_TEXT = 200


def describe_http_error(status: int, text: str) -> str:
    """Name the status and quote the gateway's error message (or the start of the body)."""
    detail = text.strip()
    return f"HTTP {status}: {detail[:MAX_ERROR_TEXT]}" if detail else f"HTTP {status}"


def check_predict_body(document: Any, expected_count: int) -> str | None:
    """Check a predict response: one prediction per instance, each with a class and an id."""
    if not isinstance(document, dict) or not isinstance(document.get("predictions"), list):
        return "predict response has no 'predictions' list"
    predictions = document["predictions"]
    if len(predictions) != expected_count:
        return f"expected {expected_count} predictions, got {len(predictions)}"
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, dict):
            return f"prediction {index} is not an object"
        label = prediction.get("class")
        if not isinstance(label, int) or not 0 <= label <= 9:
            return f"prediction {index} has class {label!r}, expected an integer 0-9"
        if not prediction.get("prediction_id"):
            return f"prediction {index} has no prediction_id, so no feedback can be sent"
    return None


def check_feedback_body(document: Any, expected_count: int) -> str | None:
    """Check a feedback response: every item accepted, each with a correct/incorrect outcome."""
    if not isinstance(document, dict):
        return "feedback response is not an object"
    accepted = document.get("accepted")
    if accepted != expected_count:
        return f"expected {expected_count} feedback items accepted, got {accepted!r}"
    outcomes = [result.get("outcome") for result in document.get("results", [])]
    if len(outcomes) != expected_count or not set(outcomes) <= {"correct", "incorrect"}:
        return f"unexpected feedback outcomes {outcomes!r}"
    return None


def check_model_status_body(document: Any, model_name: str) -> str | None:
    """Check `GET /v1/models/{model}`: the model, with at least one AVAILABLE version.

    A model with no AVAILABLE version is a failure: every prediction on it would fail.
    """
    if not isinstance(document, dict) or document.get("name") != model_name:
        return f"model status response does not describe model {model_name!r}"
    versions = document.get("versions")
    if not isinstance(versions, list):
        return "model status response has no 'versions' list"
    states = [version.get("state") for version in versions if isinstance(version, dict)]
    if "AVAILABLE" not in states:
        return f"model {model_name} has no AVAILABLE version (states {states})"
    return None


def check_model_list_body(document: Any, model_name: str) -> str | None:
    """Check `GET /v1/models`: the list names the model under load."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        return "model list response has no 'models' list"
    names = [model.get("name") for model in document["models"] if isinstance(model, dict)]
    if model_name not in names:
        return f"model list {names} does not include {model_name!r}"
    return None
