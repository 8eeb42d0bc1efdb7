"""The TF Serving gRPC adapter against the data plane, on an in-process gRPC server:
request checks before the core, bounded decoding, status and reload, and a full batch
queue refused on gRPC and REST alike without losing accepted requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.core import ServerCore
from serving.protocol.tfs_grpc import ModelServicer, PredictionServicer
from serving.server_config import BatchingOptions
from tests.fixtures.processes import free_port
from tests.serving.helpers import model_config, predict_request, server_config_for
from tests.serving.protocol.conftest import rest_app

pytestmark = pytest.mark.slow


async def _with_server(core: ServerCore, scenario, **servicer_options):
    """Run `scenario(prediction_stub, model_stub)` against an in-process gRPC server."""
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core.data_plane, **servicer_options), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(core.data_plane, core.reload), server
    )
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await scenario(
                prediction_service_pb2_grpc.PredictionServiceStub(channel),
                model_service_pb2_grpc.ModelServiceStub(channel),
            )
    finally:
        await server.stop(None)


def run(core: ServerCore, scenario, **servicer_options):
    return asyncio.run(_with_server(core, scenario, **servicer_options))


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def test_model_spec_checks_come_first(core):
    async def scenario(prediction, models):
        no_spec = await _error(prediction.Predict(predict_pb2.PredictRequest(), timeout=10))
        empty = predict_request(np.zeros((1, 28, 28), np.float32), name="")
        no_name = await _error(prediction.Predict(empty, timeout=10))
        status = await _error(
            models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=10)
        )
        return no_spec, no_name, status

    no_spec, no_name, status = run(core, scenario)
    assert (no_spec.code(), no_spec.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )
    assert no_name.details() == "ModelSpec has no name specified."
    assert status.details() == "Missing ModelSpec"


def test_a_tiny_request_declaring_a_huge_tensor_is_refused_before_allocating(core):
    """35 bytes declaring float [16000, 16000] and no values: TensorFlow would zero-fill
    1 GB. The fixture's limit is 1 MiB."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    proto = request.inputs["images"]
    proto.dtype = tf.float32.as_datatype_enum
    for size in (16000, 16000):
        proto.tensor_shape.dim.add().size = size
    assert len(request.SerializeToString()) < 40

    async def scenario(prediction, _models):
        refused = await _error(prediction.Predict(request, timeout=10))
        images = np.zeros((2, 28, 28), np.float32)
        served = await prediction.Predict(predict_request(images), timeout=10)
        return refused, served

    refused, served = run(core, scenario)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == (
        "Request input tensors would take 1024000000 bytes once decoded, more than this "
        "server's limit of 1048576 bytes (--max_request_tensor_bytes)"
    )
    assert served.outputs["classes"].tensor_shape.dim[0].size == 2


def test_outputs_as_tensor_content_with_the_flag(core):
    async def scenario(prediction, _models):
        request = predict_request(np.zeros((3, 28, 28), np.float32))
        return await prediction.Predict(request, timeout=10)

    typed = run(core, scenario)
    packed = run(core, scenario, tensor_content=True)
    assert len(typed.outputs["probabilities"].float_val) == 30
    assert not packed.outputs["probabilities"].float_val
    np.testing.assert_array_equal(
        tf.make_ndarray(packed.outputs["probabilities"]),
        tf.make_ndarray(typed.outputs["probabilities"]),
    )


def test_status_ignores_a_label_and_reload_takes_model_config_lists_only(core):
    async def scenario(_prediction, models):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist"
        request.model_spec.version_label = "no-such-label"
        status = await models.GetModelStatus(request, timeout=10)
        custom = model_server_config_pb2.ModelServerConfig()
        custom.custom_model_config.Pack(get_model_status_pb2.GetModelStatusRequest())
        refused = await _error(
            models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=custom), timeout=10
            )
        )
        return status, refused

    status, refused = run(core, scenario)
    assert [s.version for s in status.model_version_status] == [1]
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Only ModelConfigList is currently supported" in refused.details()


# -- a full batch queue ------------------------------------------------------------------


def build_slow_batchable_model(path: Path) -> None:
    """`iterations` [None] int32 -> `done` [None]: one row per request row, so requests
    batch; a call runs as many 128x128 products as its largest row asks for."""

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


@pytest.fixture
def small_queue_core(tmp_path: Path):
    """Room for one running batch and one queued batch of 4 rows."""
    build_slow_batchable_model(tmp_path / "slow" / "1")
    options = BatchingOptions(max_batch_size=4, max_enqueued_batches=1, num_batch_threads=1)
    core = ServerCore(server_config_for(model_config(("slow", tmp_path / "slow")), options))
    core.load_initial()
    yield core
    core.close()


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_a_full_queue_refuses_with_unavailable_and_503_and_loses_nothing(small_queue_core):
    core = small_queue_core
    app = rest_app(core)
    gauge = core.metrics.batch_queue_size

    def rows(*iterations: int):
        return predict_request(np.array(iterations, np.int32), name="slow", alias="iterations")

    async def scenario(prediction, _models):
        import httpx

        slow = asyncio.ensure_future(prediction.Predict(rows(40_000), timeout=60))
        # Its batch has been formed and handed to the only batch thread.
        await _until(lambda: core.metrics.wrapped_run_count.value() == 1)
        queued = asyncio.ensure_future(prediction.Predict(rows(1, 1, 1, 1), timeout=60))
        await _until(lambda: gauge.value("slow") == 1)  # the queue holds one batch: full
        refused = await _error(prediction.Predict(rows(1, 1, 1, 1), timeout=30))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            rest = await client.post(
                "/v1/models/slow:predict", content='{"instances": [1, 1, 1, 1]}'
            )
        return refused, rest, await slow, await queued

    refused, rest, slow, queued = run(core, scenario)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert "queue" in refused.details() and "full" in refused.details()
    assert rest.status_code == 503 and "full" in rest.json()["error"]
    # Nothing accepted is lost.
    assert list(slow.outputs["done"].float_val) == [40_000]
    assert list(queued.outputs["done"].float_val) == [1, 1, 1, 1]
