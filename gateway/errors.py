"""Domain exceptions and the one place that maps them to HTTP statuses.

Every error body has one shape: `{"error": {"code": "...", "message": "..."}}`.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("gateway")


class GatewayError(Exception):
    """Base of the gateway's errors: HTTP 500 unless a subclass says otherwise."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInputError(GatewayError):
    """The request is well-formed but its content is wrong: HTTP 422."""

    status_code = 422
    code = "invalid_input"


class MalformedRequestError(GatewayError):
    """The body cannot be parsed at all (bad JSON, bad token): HTTP 400."""

    status_code = 400
    code = "malformed_request"


class NoInkError(InvalidInputError):
    """The image has nothing that looks like a digit: HTTP 422."""

    code = "no_ink"


class PayloadTooLargeError(GatewayError):
    """The body, the batch or an image's pixel count is over its limit: HTTP 413."""

    status_code = 413
    code = "payload_too_large"


class RequestTimeoutError(GatewayError):
    """The body did not arrive within GATEWAY_BODY_TIMEOUT_SECONDS: HTTP 408."""

    status_code = 408
    code = "request_timeout"


class DuplicateFeedbackError(GatewayError):
    """Every prediction id in the feedback was scored before: HTTP 409."""

    status_code = 409
    code = "duplicate_feedback"


class PredictionExpiredError(GatewayError):
    """A prediction id is older than GATEWAY_FEEDBACK_MAX_AGE: HTTP 410."""

    status_code = 410
    code = "prediction_expired"


class UnsupportedMediaTypeError(GatewayError):
    """The Content-Type is not one the route accepts: HTTP 415."""

    status_code = 415
    code = "unsupported_media_type"


class ModelNotFoundError(GatewayError):
    """TF Serving has no such model, version or label: HTTP 404."""

    status_code = 404
    code = "model_not_found"


class UnauthenticatedError(GatewayError):
    """API keys are configured and the request has none: HTTP 401."""

    status_code = 401
    code = "unauthenticated"


class ForbiddenError(GatewayError):
    """API keys are configured and the request's key is not one of them: HTTP 403."""

    status_code = 403
    code = "forbidden"


class UpstreamUnavailableError(GatewayError):
    """TF Serving cannot be reached or is overloaded: HTTP 503 with Retry-After."""

    status_code = 503
    code = "upstream_unavailable"


class OverloadedError(GatewayError):
    """The gateway's own bound is full (image decoders, connections): HTTP 503, Retry-After."""

    status_code = 503
    code = "overloaded"


class FeedbackStoreUnavailableError(GatewayError):
    """The shared record of scored ids (Redis) cannot be reached: HTTP 503, Retry-After."""

    status_code = 503
    code = "feedback_store_unavailable"


class DeadlineExceededError(GatewayError):
    """Preprocessing used up the request's deadline: HTTP 504."""

    status_code = 504
    code = "deadline_exceeded"


class UpstreamTimeoutError(GatewayError):
    """TF Serving did not answer before the deadline: HTTP 504."""

    status_code = 504
    code = "upstream_timeout"


class UpstreamError(GatewayError):
    """TF Serving failed in a way the client cannot fix: HTTP 502."""

    status_code = 502
    code = "upstream_error"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The one error shape."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers=None) -> JSONResponse:
    """A JSONResponse in the one error shape."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def raw_error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, as bytes.

    For answers given below the ASGI app (gateway/server.py): before a request exists
    there is no app to ask.
    """
    body = json.dumps(error_body(code, message)).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _describe_validation_error(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{location or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def status_for(error: Exception) -> tuple[int, str, str, dict[str, str]]:
    """Map any exception to (status, code, message, headers): the gateway's one table."""
    if isinstance(error, GatewayError):
        return error.status_code, error.code, error.message, error.headers
    if isinstance(error, RequestValidationError):
        if any(item.get("type") == "json_invalid" for item in error.errors()):
            return 400, "malformed_request", "the body is not valid JSON", {}
        return 422, "invalid_input", _describe_validation_error(error), {}
    if isinstance(error, StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(error.status_code, "http_error")
        return error.status_code, code, str(error.detail), dict(error.headers or {})
    return 500, "internal", "internal error; see the gateway log", {}


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """Register the handlers that turn expected exceptions into the one error shape.

    Unexpected exceptions are answered by RequestContextMiddleware: Starlette's own
    handler for them re-raises after answering, and the server then drops the
    keep-alive connection under the client.
    """

    async def handle(request: Request, error: Exception) -> JSONResponse:
        status, code, message, headers = status_for(error)
        if status == 503:
            headers = {"Retry-After": str(retry_after_seconds), **headers}
        return error_response(status, code, message, headers)

    app.add_exception_handler(GatewayError, handle)
    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(StarletteHTTPException, handle)
