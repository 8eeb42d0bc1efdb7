"""REST adapter: TF Serving's /v1/models API and the Prometheus endpoint, over the data plane.

Routes follow TF Serving's HttpRestApiHandler: `POST /v1/models/NAME[/versions/N|/labels/L]:predict`
and `GET /v1/models/NAME[/versions/N|/labels/L][/metadata]`. Errors are `{"error": "..."}` with
TF Serving's gRPC-code-to-HTTP mapping.
"""

from __future__ import annotations

import asyncio
import json
import re

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import tensors
from serving.data_plane import DataPlane
from serving.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnavailableError,
    http_status,
)
from serving.grpc_api import build_metadata_response, build_status_response
from serving.metrics import CONTENT_TYPE

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_JSON = "application/json"


def _json_response(payload: str, status: int = 200) -> Response:
    return Response(payload, status_code=status, media_type=_JSON)


def error_response(error: ServingError) -> Response:
    """TF Serving's error body, `{"error": "<message>"}`, with its HTTP status."""
    return _json_response(json.dumps({"error": error.message}), http_status(error.code))


def _proto_json(message) -> str:
    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=1,
    )


def build_app(
    plane: DataPlane,
    metrics_path: str | None,
    timeout_seconds: float,
    accepting: callable = lambda: True,
) -> Starlette:
    """The REST application; `accepting()` turns False while the server drains on SIGTERM."""

    async def predict(request: Request, match: re.Match) -> Response:
        name, version_text, label, method = match.groups()
        if method.lower() != "predict":
            return _json_response(
                json.dumps({"error": f"{method} is not supported by the embedded server"}), 501
            )
        version = int(version_text) if version_text else None
        body = tensors.parse_predict_body(await request.body())
        signature = plane.signature_for(name, version, label, body.get("signature_name", ""))
        inputs, row_format = tensors.json_request_inputs(body, signature.definition.inputs)
        try:
            result = await asyncio.wait_for(
                plane.predict(name, version, label, signature.name, inputs, [], "REST"),
                timeout_seconds,
            )
        except TimeoutError:
            raise DeadlineExceededError("Deadline Exceeded") from None
        payload = tensors.outputs_to_json(result.outputs, row_format)
        return _json_response(json.dumps(payload, separators=(",", ":")))

    def status_or_metadata(match: re.Match) -> Response:
        name, version_text, label, metadata = match.groups()
        if not name:
            raise InvalidArgumentError("Missing model name in request.")
        version = int(version_text) if version_text else None
        if metadata:
            servable = plane.metadata(name, version, label)
            response = build_metadata_response(servable)
            spec = _proto_json(response.model_spec)
            signature_map = response.metadata["signature_def"]
            from tensorflow_serving.apis import get_model_metadata_pb2

            unpacked = get_model_metadata_pb2.SignatureDefMap()
            signature_map.Unpack(unpacked)
            # TF Serving concatenates the two JSON documents the same way.
            return _json_response(
                '{\n"model_spec":'
                + spec
                + ',\n"metadata": {"signature_def": '
                + _proto_json(unpacked)
                + "}\n}\n"
            )
        statuses = plane.status(name, version, label)
        return _json_response(_proto_json(build_status_response(statuses)) + "\n")

    async def handle(request: Request) -> Response:
        path = request.url.path
        try:
            if metrics_path and path == metrics_path and request.method == "GET":
                return Response(plane.metrics.render(), media_type=CONTENT_TYPE)
            if not path.lower().startswith("/v1/"):
                raise NotFoundError(f"Not found: {request.method} {path}")
            if not accepting():
                raise UnavailableError("Server is shutting down")
            if request.method == "POST" and (match := _PREDICT_PATH.fullmatch(path)):
                return await predict(request, match)
            if request.method == "GET" and (match := _STATUS_PATH.fullmatch(path)):
                return status_or_metadata(match)
            raise InvalidArgumentError(f"Malformed request: {request.method} {path}")
        except ServingError as error:
            return error_response(error)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])
