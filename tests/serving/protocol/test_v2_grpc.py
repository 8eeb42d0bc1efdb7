"""The Open Inference Protocol's gRPC servicer in-process, on a real grpc.aio server over a
real ServerCore: health, metadata, typed and raw inference for every datatype, status codes,
and batching shared with TF Serving's Predict."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest

from serving.data_plane import ModelSpec, PredictRequest
from serving.protocol import v2_codec
from serving.protocol.v2_grpc import InferenceServicer
from serving.protocol.v2_messages import SERVICE_NAME, message_class
from tests.fixtures.processes import free_port
from tests.serving.helpers import DATATYPE_SAMPLES, metric_value, scaled_images
from tests.serving.tfs_corpus_model import IDENTITY_DTYPES

RESPONSES = {
    "ServerLive": "ServerLiveResponse",
    "ServerReady": "ServerReadyResponse",
    "ModelReady": "ModelReadyResponse",
    "ServerMetadata": "ServerMetadataResponse",
    "ModelMetadata": "ModelMetadataResponse",
    "ModelInfer": "ModelInferResponse",
    "RepositoryModelLoad": "RepositoryModelLoadResponse",
}


def with_server(core, scenario: Callable[[Callable[..., Awaitable]], Awaitable]):
    """Serve the v2 servicer on 127.0.0.1 and run `scenario(rpc)`, where
    `await rpc("ModelInfer", request)` calls a method; the server stops afterwards."""

    async def run():
        server = grpc.aio.server()
        InferenceServicer(core.data_plane).add_to_server(server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                async def rpc(method: str, request):
                    call = channel.unary_unary(
                        f"/{SERVICE_NAME}/{method}",
                        request_serializer=type(request).SerializeToString,
                        response_deserializer=message_class(RESPONSES[method]).FromString,
                    )
                    return await call(request, timeout=30)

                return await scenario(rpc)
        finally:
            await server.stop(None)

    return asyncio.run(run())


def rpc_error(core, method: str, request) -> grpc.aio.AioRpcError:
    """The error a call fails with."""

    async def scenario(rpc):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(method, request)
        return caught.value

    return with_server(core, scenario)


def infer_request(images: np.ndarray, raw: bool, **fields):
    request = message_class("ModelInferRequest")(model_name="mnist", **fields)
    tensor = request.inputs.add(name="images", datatype="FP32", shape=images.shape)
    if raw:
        request.raw_input_contents.append(images.tobytes())
    else:
        tensor.contents.fp32_contents.extend(images.ravel().tolist())
    return request


def output_arrays(response) -> dict[str, np.ndarray]:
    """Each output as an array, from raw_output_contents or typed contents."""
    arrays = {}
    for position, output in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[position]
            arrays[output.name] = v2_codec.decode_raw(
                output.name, output.datatype, list(output.shape), raw
            )
        else:
            arrays[output.name] = v2_codec.decode_contents(
                output.name, output.datatype, list(output.shape), output.contents
            )
    return arrays


@pytest.fixture(scope="module")
def images(mnist_test_images) -> np.ndarray:
    return scaled_images(mnist_test_images[0], 4)


def test_health_and_metadata(v2_core):
    async def scenario(rpc):
        live = await rpc("ServerLive", message_class("ServerLiveRequest")())
        ready = await rpc("ServerReady", message_class("ServerReadyRequest")())
        model = message_class("ModelReadyRequest")
        ready_by = {
            version: (await rpc("ModelReady", model(name="mnist", version=version))).ready
            for version in ("", "1", "stable", "2")
        }
        server = await rpc("ServerMetadata", message_class("ServerMetadataRequest")())
        metadata = await rpc("ModelMetadata", message_class("ModelMetadataRequest")(name="mnist"))
        return live.live, ready.ready, ready_by, server, metadata

    live, ready, ready_by, server, metadata = with_server(v2_core, scenario)
    assert live and ready
    assert ready_by == {"": True, "1": True, "stable": True, "2": False}
    assert server.name == "mnist-serving-stack" and list(server.extensions) == [
        "binary_tensor_data"
    ]
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        "mnist",
        ["1"],
        "tensorflow_savedmodel",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("images", "FP32", [-1, 28, 28])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("classes", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 10]),
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_infer_matches_tf_serving_predict(v2_core, images, raw):
    request = infer_request(images, raw, id="req-7", model_version="stable")

    async def scenario(rpc):
        return await rpc("ModelInfer", request)

    response = with_server(v2_core, scenario)
    assert (response.model_name, response.model_version, response.id) == ("mnist", "1", "req-7")
    # The response takes the request's form: raw for raw, typed for typed.
    assert bool(response.raw_output_contents) == raw
    outputs = output_arrays(response)
    expected = asyncio.run(
        v2_core.data_plane.predict(PredictRequest(ModelSpec("mnist"), {"images": images}))
    ).outputs
    assert list(outputs) == ["classes", "probabilities"]
    np.testing.assert_array_equal(outputs["classes"], expected["classes"])
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-6)


@pytest.mark.parametrize("signature", sorted(IDENTITY_DTYPES))
def test_every_datatype_round_trips_raw_and_typed(v2_core, signature):
    datatype, values = DATATYPE_SAMPLES[signature]
    dtype = v2_codec.DATATYPES[datatype]
    array = np.array(
        [v.encode() for v in values] if datatype == "BYTES" else values, dtype=dtype
    ).reshape(2, 2)
    requests = []
    for raw in (True, False):
        request = message_class("ModelInferRequest")(model_name="tfs_corpus")
        request.parameters["signature_name"].string_param = signature
        tensor = request.inputs.add(name="default", datatype=datatype, shape=[2, 2])
        if raw:
            request.raw_input_contents.append(v2_codec.encode_raw(array))
        elif datatype != "FP16":
            v2_codec.fill_contents(array, tensor.contents)
        else:
            continue  # FP16 has no typed field: see test_fp16_needs_raw_contents
        requests.append(request)

    async def scenario(rpc):
        return [await rpc("ModelInfer", request) for request in requests]

    for response in with_server(v2_core, scenario):
        output = response.outputs[0]
        assert (output.datatype, list(output.shape)) == (datatype, [2, 2])
        np.testing.assert_array_equal(output_arrays(response)["default"], array)


def test_fp16_needs_raw_contents_and_comes_back_raw(v2_core):
    request = message_class("ModelInferRequest")(model_name="tfs_corpus")
    request.parameters["signature_name"].string_param = "half_output"
    request.inputs.add(name="default", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
        [1.5, 2.5]
    )

    async def scenario(rpc):
        return await rpc("ModelInfer", request)

    response = with_server(v2_core, scenario)  # typed request, FP16 output: raw for all
    assert response.outputs[0].datatype == "FP16"
    assert np.frombuffer(response.raw_output_contents[0], "<f2").tolist() == [1.5, 2.5]
    typed_fp16 = message_class("ModelInferRequest")(model_name="tfs_corpus")
    typed_fp16.parameters["signature_name"].string_param = "half"
    typed_fp16.inputs.add(name="default", datatype="FP16", shape=[1])
    error = rpc_error(v2_core, "ModelInfer", typed_fp16)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "send it in raw_input_contents" in error.details()


def _bad_requests(images):
    def make(**changes):
        request = infer_request(images[:1], raw=True)
        for key, value in changes.items():
            if key == "extra_raw":
                request.raw_input_contents.append(value)
            elif key == "contents_too":
                request.inputs[0].contents.fp32_contents.append(1.0)
            elif key == "shape":
                del request.inputs[0].shape[:]
                request.inputs[0].shape.extend(value)
            else:
                setattr(request, key, value)
        return request

    typed = infer_request(images[:1], raw=False)
    typed.inputs[0].contents.fp32_contents.append(0.5)
    return [
        (make(extra_raw=b""), "INVALID_ARGUMENT", "raw_input_contents has 2 entries"),
        (make(contents_too=True), "INVALID_ARGUMENT", "send every input one way"),
        (make(shape=[2, 28, 28]), "INVALID_ARGUMENT", "takes 6272 bytes but its raw data has 3136"),
        (typed, "INVALID_ARGUMENT", "holds 784 elements but fp32_contents holds 785"),
        (make(model_name="nope"), "NOT_FOUND", "Latest(nope)"),
        (make(model_version="9"), "NOT_FOUND", "Specific(mnist, 9)"),
        (make(model_version="canary"), "NOT_FOUND", "no version or version label 'canary'"),
        (make(model_name=""), "INVALID_ARGUMENT", "the model name is empty"),
    ]


def test_client_mistakes_have_the_status_codes_kserve_uses(v2_core, images):
    for request, code, message in _bad_requests(images):
        error = rpc_error(v2_core, "ModelInfer", request)
        assert (error.code().name, message in error.details()) == (code, True), error.details()
    error = rpc_error(v2_core, "ModelReady", message_class("ModelReadyRequest")(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(
        v2_core, "RepositoryModelLoad", message_class("RepositoryModelLoadRequest")(model_name="x")
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_v2_and_tf_serving_requests_share_a_batch(v2_core, images):
    """A v2 request and a TF Serving Predict for the same model, signature and layout,
    arriving together, run as one TensorFlow call of two rows."""
    plane = v2_core.data_plane
    servicer = InferenceServicer(plane)
    wrapped = v2_core.metrics.wrapped_run_count

    async def scenario():
        v2 = servicer.ModelInfer(infer_request(images[:1], raw=True), context=None)
        tfs = plane.predict(PredictRequest(ModelSpec("mnist"), {"images": images[1:2]}, (), "GRPC"))
        return await asyncio.gather(v2, tfs)

    asyncio.run(scenario())  # the queue's first batch runs in the executor; warm it up
    before = wrapped.value()
    v2_response, tfs_result = asyncio.run(scenario())
    assert wrapped.value() == before + 1
    alone = asyncio.run(
        plane.predict(PredictRequest(ModelSpec("mnist"), {"images": images[:1]}, (), "GRPC"))
    )
    np.testing.assert_allclose(
        output_arrays(v2_response)["probabilities"], alone.outputs["probabilities"], rtol=1e-5
    )
    assert tfs_result.outputs["probabilities"].shape == (1, 10)
    text = v2_core.metrics.render()
    assert metric_value(text, ":tensorflow:serving:request_latency_count", entrypoint="V2_GRPC")
