"""A full batch queue, driven through a live server: UNAVAILABLE on gRPC, 503 on REST."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.fixtures.serving import SERVING_CONFIG_DIR, ModelServer, launch_model_server
from tests.serving.helpers import metric_value, predict_request

pytestmark = pytest.mark.slow

MODEL = "slowbatch"
SLOW_ITERATIONS = 40_000  # ~1 s of 128x128 products on this machine
BATCHING = """
max_batch_size { value: 4 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""


def build_slow_batchable_model(path: Path) -> None:
    """`iterations` [None] int32 -> `done` [None]: one row per request row, so requests
    batch; a call runs as many 128x128 products as its largest row asks for."""
    import tensorflow as tf

    class SlowBatch(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="iterations")])
        def serving_default(self, iterations):
            weights = tf.fill([128, 128], 1.0 / 128)
            _, acc = tf.while_loop(
                lambda i, acc: i < tf.reduce_max(iterations),
                lambda i, acc: (i + 1, tf.matmul(acc, weights)),
                [tf.constant(0), tf.eye(128)],
            )
            # The products sum to 128 > 0, so this adds 0, but only after computing them.
            return {"done": tf.cast(iterations, tf.float32) + tf.minimum(tf.reduce_sum(acc), 0.0)}

    module = SlowBatch()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serving_default})


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A server with room for one running batch and one queued batch of 4 rows."""
    root = tmp_path_factory.mktemp("queue-full")
    build_slow_batchable_model(root / MODEL / "1")
    batching = root / "batching.config"
    batching.write_text(BATCHING)
    server = launch_model_server(
        root,
        base_path=root / MODEL,
        model_name=MODEL,
        enable_batching=True,
        batching_parameters_file=batching,
        monitoring_config_file=SERVING_CONFIG_DIR / "monitoring.config",
    )
    yield server
    server.process.stop()


def rows(*iterations: int) -> np.ndarray:
    return np.array(iterations, np.int32)


def test_a_full_queue_refuses_with_unavailable_and_the_server_keeps_serving(
    small_queue_server: ModelServer,
) -> None:
    channel = grpc.insecure_channel(small_queue_server.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    slow = stub.Predict.future(
        predict_request(rows(SLOW_ITERATIONS), name=MODEL, alias="iterations"), timeout=60
    )
    try:
        metrics_url = small_queue_server.metrics_url

        def running() -> bool:
            text = httpx.get(metrics_url, timeout=5).text
            name = ":tensorflow:serving:embedded:inflight_requests"
            return metric_value(text, name, model_name=MODEL) >= 1

        deadline = time.monotonic() + 30
        while not running():
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.02)
        # The slow batch holds the only batch thread: 4 rows fit the queue, 4 more do not.
        queued = stub.Predict.future(
            predict_request(rows(1, 1, 1, 1), name=MODEL, alias="iterations"), timeout=60
        )
        time.sleep(0.1)  # the queued request reaches the server before the next one
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(
                predict_request(rows(1, 1, 1, 1), name=MODEL, alias="iterations"), timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue" in refused.value.details() and "full" in refused.value.details()

        rest = httpx.post(
            f"{small_queue_server.rest_url}/v1/models/{MODEL}:predict",
            json={"instances": [1, 1, 1, 1]},
            timeout=30,
        )
        assert rest.status_code == 503, rest.text
        assert "full" in rest.json()["error"]

        # Nothing accepted is lost, and the server serves again once the queue drains.
        assert list(slow.result().outputs["done"].float_val) == [SLOW_ITERATIONS]
        assert list(queued.result().outputs["done"].float_val) == [1, 1, 1, 1]
        again = stub.Predict(predict_request(rows(2), name=MODEL, alias="iterations"), timeout=30)
        assert list(again.outputs["done"].float_val) == [2]
    finally:
        slow.exception(timeout=60)  # let the slow call end before the channel closes
        channel.close()
