"""Domain errors of the embedded model server, as TensorFlow Serving reports them.

Every error carries the gRPC status code TF Serving would answer with; the REST API maps
that code to an HTTP status with `http_status`, exactly as TF Serving's HTTP server does.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base class: a failure with a gRPC status code and TF Serving's message text."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(ServingError):
    """Bad request (wrong alias, dtype, shape, unparsable tensor, unknown label): HTTP 400."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ServingError):
    """No such model or version is being served: HTTP 404."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(ServingError):
    """The servable cannot run this request, e.g. unknown signature (gRPC): HTTP 400."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ServingError):
    """The server is out of a resource the request needs: HTTP 429."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(ServingError):
    """The server cannot take the request now (full batch queue, shutting down): HTTP 503."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ServingError):
    """The request ran out of time: HTTP 504."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnimplementedError(ServingError):
    """The request asks for something the server does not do (e.g. a REST JSON value for a
    dtype TF Serving cannot convert): HTTP 501."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ServingError):
    """A fault inside the server or TensorFlow: HTTP 500."""

    code = grpc.StatusCode.INTERNAL


class UnknownError(ServingError):
    """A failure TensorFlow did not classify (e.g. a corrupt SavedModel): HTTP 500."""

    code = grpc.StatusCode.UNKNOWN


class DataLossError(ServingError):
    """Unreadable or truncated data, e.g. a corrupt SavedModel file: HTTP 500."""

    code = grpc.StatusCode.DATA_LOSS


# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc), code by code.
_HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """Map a gRPC status code to the HTTP status TF Serving's REST API answers with."""
    return _HTTP_STATUS.get(code, 500)


def error_code_name(code: grpc.StatusCode) -> str:
    """The canonical name of a code ("INVALID_ARGUMENT"), as TF Serving's metrics label it."""
    return code.name


def error_code_number(code: grpc.StatusCode) -> int:
    """The numeric tensorflow.error.Code of a gRPC status code (the two enums agree)."""
    return code.value[0]


def from_tensorflow_error(error: BaseException) -> ServingError:
    """Wrap a TensorFlow exception in the ServingError class of the same status code."""
    code_number = getattr(error, "error_code", None)
    message = getattr(error, "message", None) or str(error)
    for cls in (
        UnimplementedError,
        InvalidArgumentError,
        NotFoundError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        InternalError,
        DataLossError,
    ):
        if code_number == error_code_number(cls.code):
            return cls(message)
    return UnknownError(message)
