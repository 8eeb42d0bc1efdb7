"""gRPC adapters: TF Serving's PredictionService and ModelService over the data plane."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensors
from serving.config import ConfigError, validate_model_server_config
from serving.data_plane import DataPlane
from serving.errors import InvalidArgumentError, ServingError, error_code_number

SIGNATURE_DEF = "signature_def"


def _spec_choice(spec) -> tuple[int | None, str | None]:
    """(version, label) of a ModelSpec's version_choice oneof."""
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return spec.version.value, None
    if which == "version_label":
        return None, spec.version_label
    return None, None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def Predict(self, request, context):
        spec = request.model_spec
        version, label = _spec_choice(spec)
        try:
            inputs = {a: tensors.make_ndarray(t, a) for a, t in request.inputs.items()}
            result = await self._plane.predict(
                spec.name,
                version,
                label,
                spec.signature_name,
                inputs,
                request.output_filter,
                "GRPC",
            )
        except ServingError as error:
            await context.abort(error.code, error.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = result.model_name
        response.model_spec.version.value = result.version
        response.model_spec.signature_name = result.signature_name
        for alias, array in result.outputs.items():
            tensors.fill_tensor_proto(array, response.outputs[alias])
        return response

    async def GetModelMetadata(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise InvalidArgumentError("Missing ModelSpec")
            if not request.metadata_field:
                raise InvalidArgumentError(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF:
                    raise InvalidArgumentError(f"Metadata field {field} is not supported")
            version, label = _spec_choice(request.model_spec)
            servable = self._plane.metadata(request.model_spec.name, version, label)
        except ServingError as error:
            await context.abort(error.code, error.message)
        return build_metadata_response(servable)

    async def Classify(self, request, context):
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Classify is not supported by the embedded server"
        )

    async def Regress(self, request, context):
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported by the embedded server"
        )

    async def MultiInference(self, request, context):
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MultiInference is not supported by the embedded server",
        )


def build_metadata_response(servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse: model_spec (name, version) and the packed SignatureDefMap."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(definition)
    response.metadata[SIGNATURE_DEF].Pack(signature_map)
    return response


def build_status_response(statuses) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatusResponse from the manager's VersionStatus list."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = int(status.state)
        entry.status.SetInParent()  # TF Serving always reports it, "OK" included
        if status.error is not None:
            entry.status.error_code = error_code_number(status.error.code)
            entry.status.error_message = status.error.message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, plane: DataPlane, reload: Callable[[object], None]) -> None:
        self._plane = plane
        self._reload = reload

    async def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise InvalidArgumentError("Missing ModelSpec")
            version, label = _spec_choice(request.model_spec)
            statuses = self._plane.status(request.model_spec.name, version, label)
        except ServingError as error:
            await context.abort(error.code, error.message)
        return build_status_response(statuses)

    async def HandleReloadConfigRequest(self, request, context):
        try:
            validate_model_server_config(request.config)
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            # Loading new versions blocks; keep it off the event loop.
            await asyncio.to_thread(self._reload, request.config)
        except ServingError as error:
            await context.abort(error.code, error.message)
        return model_management_pb2.ReloadConfigResponse()
