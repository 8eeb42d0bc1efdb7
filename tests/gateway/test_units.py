"""Fast unit tests of the gateway's pure parts: settings, signed ids, routing, inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.config import PLACEHOLDER_FEEDBACK_SECRET, Settings
from gateway.errors import InvalidInputError, MalformedRequestError, PayloadTooLargeError
from gateway.inputs import parse_predict_body
from gateway.metrics import GatewayMetrics, MetricLabels
from gateway.prediction_ids import PredictionIdSigner
from gateway.routing import VersionRouter
from gateway.schemas import predict_request_type
from gateway.upstream import channel_options, service_config

WEEK = 7 * 86400


def test_settings_read_the_gateway_environment(monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    monkeypatch.setenv("GATEWAY_API_KEYS", "alpha, beta,")
    monkeypatch.setenv("GATEWAY_CANARY_PERCENT", "12.5")
    settings = Settings()
    assert settings.port == 9999
    assert [key.get_secret_value() for key in settings.api_keys] == ["alpha", "beta"]
    assert settings.canary_percent == 12.5
    assert settings.effective_default_label == "stable", "a canary share pins the rest"
    assert Settings(canary_percent=0).effective_default_label == ""
    for max_age in ("604800", "P7D"):
        monkeypatch.setenv("GATEWAY_FEEDBACK_MAX_AGE", max_age)
        assert Settings().feedback_max_age.days == 7


@pytest.mark.parametrize("secret", [PLACEHOLDER_FEEDBACK_SECRET, "short"])
def test_production_refuses_a_weak_feedback_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="GATEWAY_FEEDBACK_SECRET"):
        Settings(env="production", feedback_secret=secret)
    assert Settings(env="development", feedback_secret=secret).env == "development"
    production = Settings(env="production", feedback_secret="x" * 32, feedback_dedup="local")
    assert production.env == "production"


def test_prediction_ids_round_trip_and_resist_forgery() -> None:
    signer = PredictionIdSigner("secret-one-0123456789", WEEK)
    prediction_id = signer.issue("mnist", 3, 7)
    claim = signer.verify(prediction_id)
    assert (claim.model, claim.version, claim.predicted_class) == ("mnist", 3, 7)
    assert signer.issue("mnist", 3, 7) != prediction_id, "ids are unique"

    other_replica = PredictionIdSigner("secret-one-0123456789", WEEK)
    assert other_replica.verify(prediction_id) == claim, "no shared state needed"
    with pytest.raises(MalformedRequestError, match="signature"):
        PredictionIdSigner("another-secret-000000", WEEK).verify(prediction_id)
    payload, signature = prediction_id.split(".")
    flipped = ("A" if payload[0] != "A" else "B") + payload[1:]
    for bad in (f"{flipped}.{signature}", payload, "", "!!!.???", "x" * 600):
        with pytest.raises(MalformedRequestError):
            signer.verify(bad)


def test_router_pins_and_splits() -> None:
    router = VersionRouter(30, "canary", "stable", rng=random.Random(1))
    assert router.select(4, None)[0].version == 4
    assert router.select(None, "canary")[0].label == "canary"
    picks = [router.select(None, None) for _ in range(2000)]
    canary = sum(by_canary for _, by_canary in picks)
    assert 0.26 < canary / 2000 < 0.34
    assert {s.label for s, by_canary in picks if not by_canary} == {"stable"}
    with pytest.raises(InvalidInputError):
        router.select(1, "stable")
    assert VersionRouter(0, "canary").select(None, None)[0].label is None


def test_service_config_balances_and_retries() -> None:
    config = service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    options = dict(channel_options(Settings(max_grpc_message_bytes=4096)))
    assert options["grpc.max_send_message_length"] == 4096
    assert options["grpc.max_receive_message_length"] == 4096


def test_inputs_build_one_batch_in_range() -> None:
    envelope = TypeAdapter(predict_request_type(4))
    body = (
        b'{"instances": [' + b",".join([b"[" + b",".join([b"255"] * 784) + b"]"] * 3) + b"],"
        b' "value_range": "0-255"}'
    )
    request = parse_predict_body(body, envelope, max_batch=4)
    batch = request.to_batch(max_pixels=10_000)
    assert request.kind == "array" and not request.may_hold_booleans
    assert batch.shape == (3, 28, 28) and batch.dtype == np.float32
    assert batch.max() == 1.0
    with pytest.raises(PayloadTooLargeError):
        parse_predict_body(b'{"instances": [' + b"1," * 4 + b"1]}", envelope, max_batch=4)


def test_version_label_gauge_follows_a_label_to_its_new_version() -> None:
    metrics = GatewayMetrics(labels=MetricLabels(["mnist"], ["canary", "stable"]))
    metrics.observe_version_label("mnist", "canary", 2)
    metrics.observe_version_label("mnist", "stable", 1)
    metrics.observe_version_label("mnist", "canary", 3)

    samples = {
        (s.labels["label"], s.labels["version"]): s.value
        for family in metrics.registry.collect()
        if family.name == "gateway_version_label_info"
        for s in family.samples
    }
    assert samples == {("canary", "3"): 1.0, ("stable", "1"): 1.0}
