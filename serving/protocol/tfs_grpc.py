"""TF Serving's gRPC API over the data plane: PredictionService and ModelService.

Thin adapters: decode the request protos into the data plane's request objects, call it,
encode its results. Error codes and texts come from the data plane (TF Serving's own);
request-shape checks that TF Serving makes before reaching its core ("Missing ModelSpec")
are made here, in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import tensor_proto
from serving.data_plane import DataPlane, ExamplesRequest, PredictRequest, merge_example_context
from serving.errors import InvalidArgumentError, ServingError
from serving.protocol.messages import (
    SIGNATURE_DEF,
    build_metadata_response,
    build_status_response,
    fill_model_spec,
    model_spec_from_proto,
)

GRPC = "GRPC"


def _missing_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise InvalidArgumentError("Missing ModelSpec")


def examples_of(input_proto) -> list[bytes]:
    """The serialized tf.Examples of a tensorflow.serving.Input (context merged in)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        return merge_example_context(
            with_context.context.SerializeToString(),
            [e.SerializeToString() for e in with_context.examples],
        )
    return []


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict, Classify, Regress, GetModelMetadata."""

    def __init__(self, plane: DataPlane, *, tensor_content: bool = False) -> None:
        self._plane = plane
        # --enable_serialization_as_tensor_content
        self._tensor_content = tensor_content

    async def Predict(self, request, context):
        try:
            _missing_model_spec(request)
            inputs = await self._plane.decode_tensor_protos(request.inputs)
            result = await self._plane.predict(
                PredictRequest(
                    model_spec_from_proto(request.model_spec),
                    inputs,
                    request.output_filter,
                    GRPC,
                )
            )
        except ServingError as error:
            await context.abort(error.code, error.message)
        response = predict_pb2.PredictResponse()
        fill_model_spec(
            response.model_spec, result.model_name, result.version, result.signature_name
        )
        as_content = self._tensor_content
        for alias, array in result.outputs.items():
            tensor_proto.fill_tensor_proto(array, response.outputs[alias], as_content)
        return response

    async def Classify(self, request, context):
        result = await self._examples(self._plane.classify, request, context)
        response = classification_pb2.ClassificationResponse()
        fill_model_spec(
            response.model_spec, result.model_name, result.version, result.signature_name
        )
        for example in result.classifications:
            classifications = response.result.classifications.add()
            for label, score in example:
                entry = classifications.classes.add()
                if label is not None:
                    entry.label = label.decode("utf-8", errors="replace")
                if score is not None:
                    entry.score = score
        return response

    async def Regress(self, request, context):
        result = await self._examples(self._plane.regress, request, context)
        response = regression_pb2.RegressionResponse()
        fill_model_spec(
            response.model_spec, result.model_name, result.version, result.signature_name
        )
        for value in result.values:
            response.result.regressions.add().value = value
        return response

    async def _examples(self, run, request, context):
        """Classify or Regress a ClassificationRequest/RegressionRequest on the data plane."""
        try:
            _missing_model_spec(request)
            spec = model_spec_from_proto(request.model_spec)
            return await run(ExamplesRequest(spec, examples_of(request.input), GRPC))
        except ServingError as error:
            await context.abort(error.code, error.message)

    async def MultiInference(self, request, context):
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "MultiInference is not supported by the embedded server",
        )

    async def GetModelMetadata(self, request, context):
        try:
            _missing_model_spec(request)
            if not request.metadata_field:
                raise InvalidArgumentError(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF:
                    raise InvalidArgumentError(f"Metadata field {field} is not supported")
            servable = self._plane.metadata(model_spec_from_proto(request.model_spec))
        except ServingError as error:
            await context.abort(error.code, error.message)
        return build_metadata_response(servable)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest.

    HandleReloadConfigRequest is unauthenticated, as in TF Serving: whoever reaches the
    gRPC port can change what is served (docs/CONTRACTS.md says who may).
    """

    def __init__(self, plane: DataPlane, reload: Callable[[object], None]) -> None:
        self._plane = plane
        self._reload = reload

    async def GetModelStatus(self, request, context):
        try:
            _missing_model_spec(request)
            spec = model_spec_from_proto(request.model_spec)
            # get_model_status_impl.cc looks at a version only: a label is ignored.
            spec = type(spec)(spec.name, spec.version)
            statuses = self._plane.status(spec)
        except ServingError as error:
            await context.abort(error.code, error.message)
        return build_status_response(statuses)

    async def HandleReloadConfigRequest(self, request, context):
        if request.config.WhichOneof("config") != "model_config_list":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported",
            )
        try:
            # Loading new versions blocks; keep it off the event loop.
            await asyncio.to_thread(self._reload, request.config)
        except ServingError as error:
            await context.abort(error.code, error.message)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        return response
