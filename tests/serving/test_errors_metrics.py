"""Status mapping and metric exposition, which clients and Prometheus parse."""

from __future__ import annotations

import grpc
import pytest

from serving.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    from_tensorflow_error,
    http_status,
)
from serving.metrics import ServingMetrics
from tests.serving.helpers import metric_value


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgumentError, 400),
        (FailedPreconditionError, 400),
        (NotFoundError, 404),
        (ResourceExhaustedError, 429),
        (UnavailableError, 503),
        (DeadlineExceededError, 504),
    ],
)
def test_tf_serving_http_mapping(error, status):
    assert http_status(error("x").code) == status


def test_tensorflow_errors_keep_their_code():
    import tensorflow as tf

    wrapped = from_tensorflow_error(tf.errors.InvalidArgumentError(None, None, "bad shape"))
    assert isinstance(wrapped, InvalidArgumentError)
    assert wrapped.message == "bad shape"
    assert from_tensorflow_error(ValueError("boom")).code == grpc.StatusCode.UNKNOWN


def test_exposition_uses_tf_serving_names_without_total_suffix():
    metrics = ServingMetrics()
    metrics.request_count.inc("mnist", "OK")
    metrics.request_count.inc("mnist", "OK")
    metrics.request_latency.observe("mnist", "Predict", "GRPC", value=150.0)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 2' in text
    assert "request_count_total" not in text
    bucket = ":tensorflow:serving:request_latency_bucket"
    # Exponential(10, 1.8, 33): 150 us falls in the le="188.9568" bucket, not below it.
    assert metric_value(text, bucket, model_name="mnist", le="104.976") == 0
    assert metric_value(text, bucket, model_name="mnist", le="188.9568") == 1
    assert metric_value(text, bucket, model_name="mnist", le="+Inf") == 1
    assert metric_value(text, ":tensorflow:serving:request_latency_sum", API="Predict") == 150
    assert metric_value(text, ":tensorflow:serving:request_latency_count", entrypoint="GRPC") == 1


def test_label_values_are_escaped():
    metrics = ServingMetrics()
    metrics.request_count.inc('we"ird\nname', "OK")
    assert 'model_name="we\\"ird\\nname"' in metrics.render()


def test_observing_a_batch_at_once_records_what_one_by_one_would():
    one_by_one, at_once = ServingMetrics(), ServingMetrics()
    values = [3.0, 150.0, 150.0, 9000.0]
    for value in values:
        one_by_one.queuing_latency.observe("pool", value=value)
    at_once.queuing_latency.observe_many("pool", values=values)
    # The histogram's own lines: the whole exposition also carries process metrics, which
    # move between two renders.
    assert at_once.queuing_latency.render() == one_by_one.queuing_latency.render()
    assert at_once.queuing_latency.count("pool") == len(values)
