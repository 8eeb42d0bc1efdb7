"""ASGI plumbing shared by the REST adapters: body reading with the size limit, replies,
headers, and the path-prefix dispatch that puts several protocols on one REST port.

No framework: the adapters need raw bodies, exact paths and their own error shapes, and a
framework's routing and request objects would only cost time per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serving.errors import DeadlineExceededError, ServingError, http_status

T = TypeVar("T")

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]
App = Callable[[dict, Receive, Send], Awaitable[None]]


class ClientGoneError(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class BodyTooLargeError(ServingError):
    """The REST body is over --rest_api_max_body_bytes (an embedded-server extension): 413."""


def header(scope: dict, name: bytes) -> str:
    """The first value of header `name` (lower case), or "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def request_path(scope: dict) -> str:
    """The path as sent (evhttp's uri_path(): %2F stays %2F until a name is decoded)."""
    raw_path = scope.get("raw_path")
    return raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]


async def read_body(scope: dict, receive: Receive, limit: int) -> bytes:
    """The whole request body; BodyTooLargeError past `limit` bytes (0 = none), checked
    against Content-Length before reading and again while reading."""
    declared = header(scope, b"content-length")
    if limit and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if limit and size > limit:
                raise BodyTooLargeError(_too_large(limit))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return (
        f"Request body is larger than this server's limit of {limit} bytes "
        "(--rest_api_max_body_bytes)"
    )


def error_status(error: ServingError) -> int:
    """The HTTP status of an error: 413 over the body limit, else TF Serving's mapping of its
    gRPC code (serving/errors.py)."""
    return 413 if isinstance(error, BodyTooLargeError) else http_status(error.code)


async def with_deadline(awaitable: Awaitable[T], seconds: float) -> T:
    """`await awaitable`, or DeadlineExceededError after `seconds` (--rest_api_timeout_in_ms)."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise DeadlineExceededError("Deadline Exceeded") from None


async def reply(send: Send, status: int, headers: list, body: bytes) -> None:
    """Send one complete response."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PrefixDispatcher:
    """Sends requests whose path is `prefix` or starts with `prefix/` to `prefixed`, all
    others to `default`: one string comparison per request, and neither app knows the other."""

    def __init__(self, prefix: str, prefixed: App, default: App) -> None:
        self._prefix = prefix
        self._prefix_slash = prefix + "/"
        self._prefixed = prefixed
        self._default = default

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path == self._prefix or path.startswith(self._prefix_slash):
            await self._prefixed(scope, receive, send)
        else:
            await self._default(scope, receive, send)
