"""The Open Inference Protocol's REST API (KServe/Triton "v2") over the data plane, as a
plain ASGI application (serving/protocol/asgi.py says why no framework).

Routes (model names and versions URL-decoded; a version is a v2 string, see v2_common):
- `GET /v2` server metadata; `GET /v2/health/live`, `GET /v2/health/ready`;
- `GET /v2/models/NAME[/versions/V]` model metadata, `GET .../ready` model readiness;
- `POST /v2/models/NAME[/versions/V]/infer`, JSON or with Triton's binary_data extension
  (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`,
  `binary_data_output`).

Errors are `{"error": "<message>"}`, with the status TF Serving's REST API gives the same
gRPC code (400 bad request, 404 unknown model or version, 503 not ready or shutting down,
504 deadline); 405 for a known path with the wrong method, 413 for a body over
--rest_api_max_body_bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import urllib.parse
from collections.abc import Callable

import numpy as np

from serving.data_plane import DataPlane, PredictRequest, PredictResult
from serving.errors import (
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnavailableError,
    UnknownError,
)
from serving.protocol import v2_codec
from serving.protocol.asgi import (
    ClientGoneError,
    Receive,
    Send,
    error_status,
    header,
    read_body,
    reply,
    request_path,
    with_deadline,
)
from serving.protocol.v2_common import (
    SIGNATURE_PARAMETER,
    check_inputs,
    check_parameters,
    model_metadata,
    model_spec,
    server_metadata,
    signature_parameter,
)

log = logging.getLogger(__name__)

V2_REST = "V2_REST"
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")
_JSON = [(b"content-type", b"application/json")]
_BINARY = b"application/octet-stream"
HEADER_LENGTH = b"inference-header-content-length"


class _MethodNotAllowedError(Exception):
    """A known path asked with another method: 405 with Allow (no gRPC code says this)."""

    def __init__(self, method: str, path: str, allowed: str) -> None:
        super().__init__(f"{method} is not allowed on {path}; use {allowed}")
        self.allowed = allowed


@dataclasses.dataclass(slots=True)
class _Input:
    """One request input, checked, before decoding."""

    name: str
    datatype: str
    shape: list[int]
    data: object = None  # the JSON `data`, or the raw bytes of the binary section


def _json_body(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_body(message: str) -> bytes:
    """The v2 error body, `{"error": "<message>"}`."""
    return _json_body({"error": message})


class V2RestApp:
    """The ASGI application of the `/v2` paths on the REST port."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        timeout_seconds: float,
        max_body_bytes: int,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self._plane = plane
        self._timeout = timeout_seconds
        self._max_body = max_body_bytes
        self._accepting = accepting

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], request_path(scope)
        try:
            body = await read_body(scope, receive, self._max_body)
            status, headers, payload = await self._dispatch(method, path, scope, body)
        except ClientGoneError:
            return
        except _MethodNotAllowedError as refused:
            headers = [*_JSON, (b"allow", refused.allowed.encode())]
            await reply(send, 405, headers, error_body(str(refused)))
            return
        except Exception as unexpected:  # a bug must still answer, with the v2 error body
            if isinstance(unexpected, ServingError):
                error = unexpected
            else:
                log.exception("v2 REST %s %s failed", method, path)
                error = UnknownError(f"{type(unexpected).__name__}: {unexpected}")
            status = error_status(error)
            await reply(send, status, _JSON, error_body(error.message))
            return
        await reply(send, status, headers, payload)

    async def _dispatch(
        self, method: str, path: str, scope: dict, body: bytes
    ) -> tuple[int, list, bytes]:
        plane = self._plane
        if path == "/v2/health/live":
            _allow(method, path, "GET")
            return 200, _JSON, _json_body({"live": True})
        if not self._accepting():
            raise UnavailableError("Server is shutting down")
        if path == "/v2/health/ready":
            _allow(method, path, "GET")
            if not plane.all_models_available():
                raise UnavailableError("Server is not ready: a model has no AVAILABLE version")
            return 200, _JSON, _json_body({"ready": True})
        if path == "/v2":
            _allow(method, path, "GET")
            return 200, _JSON, _json_body(server_metadata())
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            raise NotFoundError(f"No v2 endpoint at {method} {path}")
        name = urllib.parse.unquote(match.group(1))
        version = urllib.parse.unquote(match.group(2) or "")
        action = match.group(3)
        if action == "/infer":
            _allow(method, path, "POST")
            return await self._infer(name, version, scope, body)
        _allow(method, path, "GET")
        spec = model_spec(plane, name, version)
        if action == "/ready":
            if not plane.model_ready(spec):
                raise UnavailableError(f"Model {name} is not ready")
            return 200, _JSON, _json_body({"name": name, "ready": True})
        return 200, _JSON, _json_body(model_metadata(plane, spec))

    # -- infer -----------------------------------------------------------------------------

    async def _infer(
        self, name: str, version: str, scope: dict, body: bytes
    ) -> tuple[int, list, bytes]:
        plane = self._plane
        encoding = header(scope, b"content-encoding")
        if encoding and encoding != "identity":
            raise InvalidArgumentError(
                f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
            )
        document_bytes, binary = _split_body(header(scope, HEADER_LENGTH), body)
        document = await plane.offload(_parse_document, document_bytes, cost=len(document_bytes))
        parameters = _parameters(document, "the request")
        spec = model_spec(
            plane, name, version, signature_parameter(parameters.get(SIGNATURE_PARAMETER))
        )
        binary_default = _flag(parameters, "binary_data_output", "the request")
        request_id = document.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidArgumentError(f'"id" must be a string, got {request_id!r}')
        inputs = _inputs(document, binary)
        output_names, binary_outputs = _requested_outputs(document, binary_default)
        signature = plane.signature_for(spec)
        check_inputs(signature, [(i.name, i.datatype) for i in inputs])
        plane.check_decoded_bytes(sum(_decoded_bytes(i) for i in inputs))
        # Without a true/false anywhere, numeric data cannot hide a boolean.
        bools = b"true" in document_bytes or b"false" in document_bytes
        arrays = await plane.offload(_decode_inputs, inputs, bools, cost=len(body))
        result = await with_deadline(
            plane.predict(PredictRequest(spec, arrays, output_names, V2_REST)), self._timeout
        )
        return await plane.offload(
            _encode_response,
            result,
            request_id,
            binary_outputs,
            binary_default,
            cost=sum(array.size for array in result.outputs.values()) * 8,
        )


def _allow(method: str, path: str, allowed: str) -> None:
    if method != allowed:
        raise _MethodNotAllowedError(method, path, allowed)


def _split_body(header_length: str, body: bytes) -> tuple[bytes, memoryview]:
    """(the JSON document, the binary section after it) of a binary_data request."""
    if not header_length:
        return body, memoryview(b"")
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidArgumentError(
            f"Inference-Header-Content-Length {header_length!r} must be the byte length of "
            f"the JSON part of the body (at most {len(body)})"
        )
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def _parse_document(text: bytes) -> dict:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidArgumentError(f"The request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError("The request body must be a JSON object")
    return document


def _parameters(holder: dict, what: str) -> dict:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidArgumentError(f'"parameters" of {what} must be a JSON object')
    return parameters


def _flag(parameters: dict, key: str, what: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f'"{key}" of {what} must be true or false, got {value!r}')
    return value


def _inputs(document: dict, binary: memoryview) -> list[_Input]:
    """The request's inputs, checked field by field; binary data cut from `binary` in order."""
    entries = document.get("inputs")
    if not isinstance(entries, list):
        raise InvalidArgumentError('The request needs "inputs", a JSON array of tensors')
    inputs = []
    offset = 0
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidArgumentError(f"inputs[{position}] must be a JSON object")
        name = entry.get("name")
        datatype = entry.get("datatype")
        shape = entry.get("shape")
        if not isinstance(name, str):
            raise InvalidArgumentError(f'inputs[{position}] needs a "name" string')
        if not isinstance(datatype, str):
            raise InvalidArgumentError(f"input '{name}' needs a \"datatype\" string")
        if not isinstance(shape, list):
            raise InvalidArgumentError(f"input '{name}' needs a \"shape\" array")
        v2_codec.numpy_dtype(name, datatype)
        v2_codec.element_count(name, shape)
        what = f"input '{name}'"
        parameters = _parameters(entry, what)
        check_parameters(what, parameters)
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise InvalidArgumentError(
                    f'{what} needs "data", or a "binary_data_size" parameter with its bytes '
                    "after the JSON (Inference-Header-Content-Length)"
                )
            inputs.append(_Input(name, datatype, shape, entry["data"]))
            continue
        if type(size) is not int or size < 0:
            raise InvalidArgumentError(
                f'{what}: "binary_data_size" must be a non-negative integer, got {size!r}'
            )
        if offset + size > len(binary):
            raise InvalidArgumentError(
                f"{what}: binary_data_size {size} runs past the end of the body's binary "
                f"section ({len(binary) - offset} bytes left; is Inference-Header-Content-"
                "Length set?)"
            )
        inputs.append(_Input(name, datatype, shape, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise InvalidArgumentError(
            f"The body has {len(binary) - offset} bytes after the JSON that no input's "
            "binary_data_size accounts for"
        )
    return inputs


def _decoded_bytes(item: _Input) -> int:
    count = v2_codec.element_count(item.name, item.shape)
    raw_size = len(item.data) if isinstance(item.data, memoryview) else None
    return v2_codec.decoded_bytes(item.datatype, count, raw_size)


def _decode_inputs(inputs: list[_Input], may_hold_bools: bool) -> dict[str, np.ndarray]:
    arrays = {}
    for item in inputs:
        if isinstance(item.data, memoryview):
            arrays[item.name] = v2_codec.decode_raw(item.name, item.datatype, item.shape, item.data)
        else:
            arrays[item.name] = v2_codec.decode_json(
                item.name, item.datatype, item.shape, item.data, may_hold_bools
            )
    return arrays


def _requested_outputs(document: dict, binary_default: bool) -> tuple[list[str], dict[str, bool]]:
    """(output names to return, in order; {name: binary} for those that say)."""
    entries = document.get("outputs")
    if entries is None:
        return [], {}
    if not isinstance(entries, list):
        raise InvalidArgumentError('"outputs" must be a JSON array')
    names = []
    binary = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidArgumentError(f'outputs[{position}] must be an object with a "name"')
        name = entry["name"]
        what = f"output '{name}'"
        parameters = _parameters(entry, what)
        check_parameters(what, parameters)
        names.append(name)
        binary[name] = _flag(parameters, "binary_data", what, binary_default)
    return names, binary


def _encode_response(
    result: PredictResult,
    request_id: str | None,
    binary_outputs: dict[str, bool],
    binary_default: bool,
) -> tuple[int, list, bytes]:
    response: dict = {"model_name": result.model_name, "model_version": str(result.version)}
    if request_id is not None:
        response["id"] = request_id
    outputs = []
    sections = []
    for name, array in result.outputs.items():
        entry = {
            "name": name,
            "datatype": v2_codec.array_datatype(name, array),
            "shape": list(array.shape),
        }
        if binary_outputs.get(name, binary_default):
            raw = v2_codec.encode_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            sections.append(raw)
        else:
            entry["data"] = v2_codec.encode_json(name, array)
        outputs.append(entry)
    response["outputs"] = outputs
    document = _json_body(response)
    if not sections:
        return 200, _JSON, document
    headers = [
        (b"content-type", _BINARY),
        (HEADER_LENGTH, str(len(document)).encode()),
    ]
    return 200, headers, b"".join([document, *sections])
