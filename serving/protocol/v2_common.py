"""What the Open Inference Protocol's REST and gRPC adapters share: model versions as v2
strings, the signature a request runs, input checks, model and server metadata.

docs/CONTRACTS.md ("Open Inference Protocol v2") documents each decision made here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from serving.data_plane import DataPlane, ModelSpec
from serving.errors import InvalidArgumentError, NotFoundError
from serving.protocol.v2_codec import tf_datatype
from serving.servable import DEFAULT_SIGNATURE, Signature
from serving.tensor_proto import shape_dims

INT64_MAX = 2**63 - 1
SERVER_NAME = "mnist-serving-stack"
# Triton's name for the binary_data REST extension, as its Server Metadata lists it.
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "tensorflow_savedmodel"
# The request parameter that picks a signature other than serving_default.
SIGNATURE_PARAMETER = "signature_name"
# Parameters of Triton extensions this server does not implement: refused rather than
# ignored, since ignoring them would change what the client gets.
UNSUPPORTED_PARAMETERS = {
    "classification": "Triton's classification extension",
    "shared_memory_region": "Triton's shared-memory extensions",
}


@functools.cache
def server_version() -> str:
    """This project's version, as Server Metadata reports it."""
    from importlib import metadata

    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def server_metadata() -> dict:
    """Server Metadata: name, version, extensions."""
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def model_spec(plane: DataPlane, name: str, version: str, signature_name: str = "") -> ModelSpec:
    """The data plane's ModelSpec of a v2 model name and version string.

    "" is the latest AVAILABLE version; a string of digits is that version; any other
    string is a version label (TF Serving's `version_labels`), a 404 when the model has no
    such label. Labels are accepted because v2 versions are free-form strings the server
    interprets; responses always name the numeric version that ran.
    """
    if not name:
        raise InvalidArgumentError("the model name is empty")
    if not version:
        return ModelSpec(name, None, None, signature_name)
    if version.isascii() and version.isdigit():
        number = int(version)
        if number > INT64_MAX:
            raise NotFoundError(f"model {name} has no version {version}")
        return ModelSpec(name, number, None, signature_name)
    plane.available_versions(name)  # NotFoundError for an unknown model comes first
    if version not in plane.version_labels(name):
        raise NotFoundError(f"model {name} has no version or version label {version!r}")
    return ModelSpec(name, None, version, signature_name)


def signature_parameter(value: object) -> str:
    """The `signature_name` request parameter's value; "" (serving_default) when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f'the "{SIGNATURE_PARAMETER}" parameter must be a string, got {value!r}'
        )
    return value


def check_parameters(what: str, parameters: Iterable[str]) -> None:
    """Refuse a tensor's parameters of Triton extensions this server does not implement
    (others are ignored, as the protocol lets a server do)."""
    for key in parameters:
        extension = UNSUPPORTED_PARAMETERS.get(key)
        if extension is not None:
            raise InvalidArgumentError(
                f"{what}: the {key!r} parameter ({extension}) is not supported by this server"
            )


def check_inputs(signature: Signature, inputs: Iterable[tuple[str, str]]) -> None:
    """Each (name, datatype) of a request: named once, and of the datatype the signature
    takes. Names the signature lacks are the data plane's to refuse (with TF's message)."""
    seen: set[str] = set()
    declared = signature.definition.inputs
    for name, datatype in inputs:
        if name in seen:
            raise InvalidArgumentError(f"input '{name}' appears more than once")
        seen.add(name)
        info = declared.get(name)
        if info is None:
            continue
        wanted = tf_datatype(info.dtype)
        if datatype != wanted:
            raise InvalidArgumentError(
                f"input '{name}' has datatype {datatype} but signature "
                f"'{signature.name}' takes {wanted}"
            )


def tensor_metadata(tensors) -> list[dict]:
    """v2 TensorMetadata of a signature's TensorInfo map, by alias (unknown rank: [-1])."""
    return [
        {
            "name": alias,
            "datatype": tf_datatype(info.dtype),
            "shape": _dims(shape_dims(info.tensor_shape)),
        }
        for alias, info in sorted(tensors.items())
    ]


def _dims(dims: list[int] | None) -> list[int]:
    return [-1] if dims is None else dims


def model_metadata(plane: DataPlane, spec: ModelSpec) -> dict:
    """Model Metadata of the version a spec names: its serving_default signature's inputs
    and outputs, and the AVAILABLE versions of the model."""
    servable = plane.metadata(spec)
    signature = servable.signatures.get(DEFAULT_SIGNATURE)
    if signature is None:
        raise InvalidArgumentError(
            f"model {spec.name} has no {DEFAULT_SIGNATURE} signature, which v2 metadata "
            f"describes; its signatures are {sorted(servable.signatures)} (infer with the "
            f'"{SIGNATURE_PARAMETER}" parameter)'
        )
    definition = signature.definition
    return {
        "name": spec.name,
        "versions": [str(v) for v in plane.available_versions(spec.name)],
        "platform": PLATFORM,
        "inputs": tensor_metadata(definition.inputs),
        "outputs": tensor_metadata(definition.outputs),
    }
