"""TF Serving's response messages built from the data plane's results.

Shared by the gRPC and REST adapters: TF Serving's REST API answers status and metadata
with the same protos, printed as JSON, so both adapters build them here and neither
depends on the other.
"""

from __future__ import annotations

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.data_plane import ModelSpec
from serving.errors import error_code_number
from serving.manager import VersionStatus
from serving.servable import Servable

SIGNATURE_DEF = "signature_def"


def model_spec_from_proto(spec: model_pb2.ModelSpec) -> ModelSpec:
    """The data plane's ModelSpec of a tensorflow.serving.ModelSpec (version_choice oneof)."""
    which = spec.WhichOneof("version_choice")
    return ModelSpec(
        spec.name,
        spec.version.value if which == "version" else None,
        spec.version_label if which == "version_label" else None,
        spec.signature_name,
    )


def fill_model_spec(
    proto: model_pb2.ModelSpec, name: str, version: int, signature_name: str | None
) -> None:
    """util.cc MakeModelSpec: name, version, and the signature name when one applies."""
    proto.name = name
    proto.version.value = version
    if signature_name is not None:
        proto.signature_name = signature_name


def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    """The version's SignatureDefMap, as GetModelMetadata packs it."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(definition)
    return signature_map


def build_metadata_response(servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadataResponse: model_spec (name, version) and the packed SignatureDefMap."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF].Pack(signature_def_map(servable))
    return response


def build_status_response(
    statuses: list[VersionStatus],
) -> get_model_status_pb2.GetModelStatusResponse:
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
