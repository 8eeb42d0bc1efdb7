"""TF Serving's REST API over the data plane, as a plain ASGI application.

Routing, status codes and bodies follow model_servers/http_server.cc and
http_rest_api_handler.cc:
- `POST /v1/models/NAME[/versions/N|/labels/L]:(predict|classify|regress)`;
- `GET /v1/models/NAME[/versions/N|/labels/L][/metadata]`;
- the Prometheus page at the monitoring config's path;
- errors are `{"error": "<message>"}` with TF Serving's gRPC-code-to-HTTP mapping; paths
  outside /v1/ are 404 with an empty body, as TF Serving's HTTP server leaves them.

ASGI without a framework (serving/protocol/asgi.py says why).
Embedded-server extension: bodies over --rest_api_max_body_bytes are refused with 413.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable

from google.protobuf import json_format

from serving.data_plane import DataPlane, ExamplesRequest, ModelSpec, PredictRequest
from serving.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
    UnknownError,
)
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.protocol import tfs_json
from serving.protocol.asgi import (
    BodyTooLargeError,
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
from serving.protocol.messages import build_status_response, signature_def_map

log = logging.getLogger(__name__)

REST = "REST"
INT64_MAX = 2**63 - 1
# http_rest_api_util.cc, both case-insensitive.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_JSON_HEADERS = [(b"content-type", b"application/json")]
_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]
_ORIGIN = re.compile(r"https?://")


class UnparsedPathError(InvalidArgumentError):
    """ParseModelInfo refused the path (a version beyond int64): HTTP 400 with an empty
    body, because http_rest_api_handler.cc returns before writing the error JSON."""


# libevent's evhttp_send_error page, which TF Serving's HTTP server sends for paths outside
# /v1/ (no handler claims them).
NOT_FOUND_PAGE = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)


def error_json(message: str) -> bytes:
    """MakeJsonFromStatus: rapidjson's PrettyWriter output of {"error": message}."""
    return ('{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}").encode()


def _proto_json(message, preserve_names: bool) -> str:
    """protobuf's MessageToJsonString with add_whitespace and default-valued fields."""
    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=preserve_names,
        always_print_fields_with_no_presence=True,
        indent=1,
    )


def metadata_json(servable) -> str:
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): two JSON documents
    concatenated by hand, exactly as TF Serving writes them."""
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=servable.name)
    spec.version.value = servable.version
    return (
        '{\n"model_spec":'
        + _proto_json(spec, True)
        + ',\n"metadata": {"signature_def": '
        + _proto_json(signature_def_map(servable), True)
        + "}\n}\n"
    )


class TfsRestApp:
    """The ASGI application of the REST port."""

    def __init__(
        self,
        plane: DataPlane,
        *,
        metrics_path: str | None,
        timeout_seconds: float,
        max_body_bytes: int,
        enable_cors: bool = False,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self._plane = plane
        self._metrics_path = metrics_path
        self._timeout = timeout_seconds
        self._max_body = max_body_bytes
        self._cors = enable_cors
        self._accepting = accepting

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # uvicorn runs with lifespan off; be polite anyway
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        path = request_path(scope)
        if self._metrics_path and path == self._metrics_path:
            await reply(
                send,
                200,
                [(b"content-type", METRICS_CONTENT_TYPE.encode())],
                self._plane.metrics.render().encode(),
            )
            return
        if not _V1.fullmatch(path):
            await reply(send, 404, [(b"content-type", b"text/html")], NOT_FOUND_PAGE)
            return
        started = time.perf_counter()
        status, code, headers, body = await self._serve_v1(scope, receive, method, path)
        if status is None:
            return  # the client went away
        await reply(send, status, headers, body)
        model_name, verb = _path_labels(method, path)
        self._plane.metrics.record_rest_request(
            model_name, code, verb, (time.perf_counter() - started) * 1e6
        )

    async def _serve_v1(
        self, scope: dict, receive: Receive, method: str, path: str
    ) -> tuple[int | None, str, list, bytes]:
        """(HTTP status, status code name, headers, body) of a /v1 request; the HTTP status
        is None when the client left."""
        headers = list(_CORS_HEADERS) if self._cors else []
        try:
            body = await read_body(scope, receive, self._max_body)
            if not self._accepting():
                raise UnavailableError("Server is shutting down")
            if method == "OPTIONS":
                origin = header(scope, b"origin")
                if not _ORIGIN.search(origin):
                    raise FailedPreconditionError("Origin header is missing in CORS preflight")
                return 200, "OK", headers, b""
            output = await self._dispatch(method, path, body)
        except ClientGoneError:
            return None, "", [], b""
        except Exception as unexpected:  # a bug must still answer, as TF Serving's UNKNOWN
            if isinstance(unexpected, ServingError):
                error = unexpected
            else:
                log.exception("REST %s %s failed", method, path)
                error = UnknownError(f"{type(unexpected).__name__}: {unexpected}")
            code = error.code.name
            status = error_status(error)
            if isinstance(error, UnparsedPathError) or (
                method == "OPTIONS" and not isinstance(error, BodyTooLargeError)
            ):
                return status, code, [*_JSON_HEADERS, *headers], b""
            return status, code, [*_JSON_HEADERS, *headers], error_json(error.message)
        return 200, "OK", [*_JSON_HEADERS, *headers], output

    async def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        """http_rest_api_handler.cc ProcessRequest: the JSON body of a 200, or raise."""
        malformed = InvalidArgumentError(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICT_PATH.fullmatch(path)
            if not match:
                raise malformed
            spec, verb = _model_spec(match), match.group(4)
            if verb == "predict":
                return await self._predict(spec, body)
            if verb == "classify":
                return await self._classify(spec, body)
            if verb == "regress":
                return await self._regress(spec, body)
            raise malformed  # the regex takes any case; the dispatch only lower case
        if method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if not match:
                raise malformed
            spec = _model_spec(match)
            if not spec.name:
                raise InvalidArgumentError("Missing model name in request.")
            if match.group(4) == "metadata":
                return metadata_json(self._plane.metadata(spec)).encode()
            # get_model_status_impl.cc looks at a version only: a label is ignored.
            statuses = self._plane.status(ModelSpec(spec.name, spec.version))
            return _proto_json(build_status_response(statuses), True).encode() + b"\n"
        raise malformed

    async def _predict(self, spec: ModelSpec, body: bytes) -> bytes:
        plane = self._plane
        document = await plane.offload(tfs_json.parse_predict_body, body, cost=len(body))
        signature_name = document.get("signature_name", "")
        spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
        signature = plane.signature_for(spec)
        inputs, row_format = await plane.offload(
            tfs_json.json_request_inputs,
            document,
            signature.definition.inputs,
            signature_name,
            tfs_json.literals_absent(body),
            cost=len(body),
        )
        plane.check_decoded_bytes(sum(array.nbytes for array in inputs.values()))
        result = await with_deadline(
            plane.predict(PredictRequest(spec, inputs, (), REST, adapter_counts=True)),
            self._timeout,
        )
        text = await plane.offload(
            tfs_json.outputs_to_json,
            result.outputs,
            row_format,
            cost=sum(array.size for array in result.outputs.values()) * 8,
        )
        return text.encode("utf-8", "surrogateescape")

    async def _classify(self, spec: ModelSpec, body: bytes) -> bytes:
        request = await self._examples_request(spec, body)
        result = await with_deadline(self._plane.classify(request), self._timeout)
        text = tfs_json.classification_json(result.classifications)
        return text.encode("utf-8", "surrogateescape")

    async def _regress(self, spec: ModelSpec, body: bytes) -> bytes:
        request = await self._examples_request(spec, body)
        result = await with_deadline(self._plane.regress(request), self._timeout)
        return tfs_json.regression_json(result.values).encode()

    async def _examples_request(self, spec: ModelSpec, body: bytes) -> ExamplesRequest:
        """FillClassifyRegressRequestFromJson, decoded off the loop when the body is big."""
        examples, signature_name = await self._plane.offload(
            tfs_json.parse_examples_body, body, cost=len(body)
        )
        spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
        return ExamplesRequest(spec, examples, REST, adapter_counts=True)


def _path_labels(method: str, path: str) -> tuple[str, str]:
    """(model name, verb) as http_server.cc records a REST request: the name its path
    names ("" if none) and, for POST, the verb after the colon."""
    match = (
        _PREDICT_PATH.fullmatch(path)
        if method == "POST"
        else _STATUS_PATH.fullmatch(path)
        if method == "GET"
        else None
    )
    if match is None or not match.group(1):
        return "", ""
    return urllib.parse.unquote(match.group(1)), match.group(4) if method == "POST" else ""


def _model_spec(match: re.Match) -> ModelSpec:
    """http_rest_api_util.cc ParseModelInfo: URL-decoded name and label, int64 version."""
    name, version_text, label = match.group(1), match.group(2), match.group(3)
    version = None
    if version_text:
        version = int(version_text)
        if version > INT64_MAX:
            raise UnparsedPathError(f"Failed to convert version: {version_text} to numeric.")
    return ModelSpec(
        urllib.parse.unquote(name) if name else "",
        version,
        urllib.parse.unquote(label) if label else None,
    )
