"""The Open Inference Protocol's gRPC API (`inference.GRPCInferenceService`) over the data
plane: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer.

The service is assembled from KServe's descriptor with grpc's generic method handlers
(v2_messages.py says why there is no generated code). RepositoryModelLoad and
RepositoryModelUnload are not registered, so gRPC answers them UNIMPLEMENTED: models change
through the model config, as on TF Serving's API.

Inputs travel as typed `contents` or as `raw_input_contents` (one entry per input, in
order); a response uses `raw_output_contents` when the request used raw inputs (KServe's
rule; Triton's clients send raw and read raw) or when an output is FP16, which has no typed
field, and typed `contents` otherwise. Errors carry the data plane's gRPC status codes.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf import json_format, message_factory

from serving.data_plane import DataPlane, PredictRequest, PredictResult
from serving.errors import InvalidArgumentError, ServingError, UnavailableError
from serving.protocol import v2_codec
from serving.protocol.v2_common import (
    SIGNATURE_PARAMETER,
    check_inputs,
    check_parameters,
    model_metadata,
    model_spec,
    server_metadata,
    signature_parameter,
)
from serving.protocol.v2_messages import SERVICE_NAME, message_class, service_descriptor

V2_GRPC = "V2_GRPC"


def _parameter_values(parameters) -> dict[str, object]:
    """InferParameter map -> {key: bool | int | str} (None for a kind this proto lacks)."""
    values = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, kind) if kind else None
    return values


class InferenceServicer:
    """inference.GRPCInferenceService; register it with `add_to_server`."""

    def __init__(self, plane: DataPlane, accepting: Callable[[], bool] = lambda: True) -> None:
        self._plane = plane
        self._accepting = accepting

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register every method this servicer implements, as generated code would."""
        handlers = {}
        for method in service_descriptor().methods:
            behaviour = getattr(self, method.name, None)
            if behaviour is None:
                continue
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
                response_serializer=message_factory.GetMessageClass(
                    method.output_type
                ).SerializeToString,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    # -- health and metadata ---------------------------------------------------------------

    async def ServerLive(self, request, context):
        return message_class("ServerLiveResponse")(live=True)

    async def ServerReady(self, request, context):
        ready = self._accepting() and self._plane.all_models_available()
        return message_class("ServerReadyResponse")(ready=ready)

    async def ModelReady(self, request, context):
        try:
            spec = model_spec(self._plane, request.name, request.version)
            ready = self._accepting() and self._plane.model_ready(spec)
        except ServingError as error:
            await context.abort(error.code, error.message)
        return message_class("ModelReadyResponse")(ready=ready)

    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(server_metadata(), message_class("ServerMetadataResponse")())

    async def ModelMetadata(self, request, context):
        try:
            metadata = model_metadata(
                self._plane, model_spec(self._plane, request.name, request.version)
            )
        except ServingError as error:
            await context.abort(error.code, error.message)
        return json_format.ParseDict(metadata, message_class("ModelMetadataResponse")())

    # -- inference -------------------------------------------------------------------------

    async def ModelInfer(self, request, context):
        plane = self._plane
        try:
            if not self._accepting():
                raise UnavailableError("Server is shutting down")
            parameters = _parameter_values(request.parameters)
            spec = model_spec(
                plane,
                request.model_name,
                request.model_version,
                signature_parameter(parameters.get(SIGNATURE_PARAMETER)),
            )
            total, cost = _check_inputs(request)
            for output in request.outputs:
                check_parameters(f"output '{output.name}'", output.parameters)
            check_inputs(plane.signature_for(spec), [(i.name, i.datatype) for i in request.inputs])
            plane.check_decoded_bytes(total)
            arrays = await plane.offload(_decode_inputs, request, cost=cost)
            result = await plane.predict(
                PredictRequest(spec, arrays, [o.name for o in request.outputs], V2_GRPC)
            )
            return await plane.offload(
                _build_response,
                result,
                request.id,
                bool(request.raw_input_contents),
                cost=sum(array.size for array in result.outputs.values()) * 8,
            )
        except ServingError as error:
            await context.abort(error.code, error.message)


def _check_inputs(request) -> tuple[int, int]:
    """Check each input's fields and raw/typed form (KServe's rules); return (bytes the
    decoded inputs take, of which decoding costs time per element)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgumentError(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs: send one per input, in order"
        )
    total = cost = 0
    for position, item in enumerate(request.inputs):
        name = item.name
        check_parameters(f"input '{name}'", item.parameters)
        v2_codec.numpy_dtype(name, item.datatype)
        count = v2_codec.element_count(name, list(item.shape))
        if raw:
            if item.HasField("contents"):
                raise InvalidArgumentError(
                    f"input '{name}' has contents although the request uses "
                    "raw_input_contents: send every input one way"
                )
            size = v2_codec.decoded_bytes(item.datatype, count, len(raw[position]))
            cost += size if item.datatype == "BYTES" else 0
        else:
            size = v2_codec.decoded_bytes(item.datatype, count)
            cost += size
        total += size
    return total, cost


def _decode_inputs(request) -> dict[str, np.ndarray]:
    raw = request.raw_input_contents
    arrays = {}
    for position, item in enumerate(request.inputs):
        shape = list(item.shape)
        if raw:
            arrays[item.name] = v2_codec.decode_raw(item.name, item.datatype, shape, raw[position])
        else:
            arrays[item.name] = v2_codec.decode_contents(
                item.name, item.datatype, shape, item.contents
            )
    return arrays


def _build_response(result: PredictResult, request_id: str, raw: bool):
    response = message_class("ModelInferResponse")(
        model_name=result.model_name, model_version=str(result.version), id=request_id
    )
    datatypes = [
        (name, array, v2_codec.array_datatype(name, array))
        for name, array in result.outputs.items()
    ]
    raw = raw or any(datatype not in v2_codec.CONTENTS_FIELDS for _, _, datatype in datatypes)
    for name, array, datatype in datatypes:
        output = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(v2_codec.encode_raw(array))
        else:
            v2_codec.fill_contents(array, output.contents)
    return response
