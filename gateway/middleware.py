"""Pure-ASGI middleware (cheaper per request than BaseHTTPMiddleware).

- `RequestContextMiddleware`: what every request needs. An X-Request-ID; the request
  count and latency metrics by route template; the body's size limit (413) and deadline
  (408), enforced while the body is read; and a well-formed 500 for any unexpected error.
- `ApiKeyMiddleware`: the API key check for every /v1 path (and /metrics when it has keys
  of its own), made before a byte of the body is read, so that no route can forget it
  and an unauthenticated client learns nothing about its body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match

from gateway.errors import error_body
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("gateway")
MAX_REQUEST_ID_LENGTH = 128


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def route_template(routes: list[BaseRoute], scope) -> str:
    """The template of the route `scope` falls under, or "unmatched".

    Used for requests answered before routing (a 413 on Content-Length, a 401): the metric
    label must be a template, never the path a client typed, or label cardinality is
    unbounded.
    """
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "unmatched")
    return "unmatched"


async def send_error(send, status: int, code: str, message: str, headers=()) -> None:
    """Send a complete error response in the one shape; it closes the connection."""
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # Sent before the body was read (or after a failure): the connection's
                # state is not worth keeping, and the client must not reuse it blindly.
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Request id, metrics, the body's limit and deadline, and the last-resort 500."""

    def __init__(
        self,
        app,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        body_timeout_seconds: float,
        routes: list[BaseRoute],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        raw_id = _header(scope, b"x-request-id")
        request_id = (
            raw_id.decode("latin-1")[:MAX_REQUEST_ID_LENGTH] if raw_id else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = [500]
        # Set once the middleware has answered for the app: the app's own answer, which
        # may follow (it sees a disconnect), is dropped.
        answered = False
        response_started = False
        limit = self.max_body_bytes
        body_deadline = time.monotonic() + self.body_timeout_seconds

        async def send_with_context(message) -> None:
            nonlocal response_started
            if answered:
                return
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        async def answer(status: int, code: str, message: str) -> None:
            nonlocal answered
            if not response_started:
                await send_error(send_with_context, status, code, message)
            answered = True

        received = 0

        async def receive_bounded():
            nonlocal received
            if answered:
                return {"type": "http.disconnect"}
            try:
                async with asyncio.timeout(max(body_deadline - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                await answer(
                    408,
                    "request_timeout",
                    f"the body did not arrive within {self.body_timeout_seconds:g}s "
                    "(GATEWAY_BODY_TIMEOUT_SECONDS); send it in one go",
                )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answered here, for every route: FastAPI would turn an exception
                    # raised inside its own body parsing into a 400.
                    await answer(
                        413,
                        "payload_too_large",
                        f"the body is over the {limit}-byte limit (GATEWAY_MAX_BODY_BYTES)",
                    )
                    return {"type": "http.disconnect"}
            return message

        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await answer(
                    413,
                    "payload_too_large",
                    f"the body is {int(declared)} bytes, over the {limit}-byte limit "
                    "(GATEWAY_MAX_BODY_BYTES)",
                )
                return
            await self.app(scope, receive_bounded, send_with_context)
        except Exception as error:
            if not answered:
                # Starlette's own last-resort handler re-raises after answering, and the
                # server then drops the keep-alive connection without telling the client.
                logger.error("unhandled error on %s", scope.get("path"), exc_info=error)
                await answer(500, "internal", "internal error; see the gateway log")
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or route_template(self.routes, scope)
            elapsed = time.perf_counter() - started
            method = self.metrics.labels.method(scope["method"])
            self.metrics.requests.labels(template, method, str(status_holder[0])).inc()
            self.metrics.request_duration.labels(template).observe(elapsed)


def offered_key(scope) -> str | None:
    """The key a request offers: X-API-Key, or an Authorization Bearer token."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.decode("latin-1")
    scheme, _, token = (_header(scope, b"authorization") or b"").decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_matches(offered: str, keys: Sequence[str]) -> bool:
    """Compare against every key in constant time, so timing reveals nothing."""
    matches = [hmac.compare_digest(offered.encode(), key.encode()) for key in keys]
    return any(matches)


class ApiKeyMiddleware:
    """401 without a key, 403 with a wrong one, for /v1 (API keys) and /metrics (its keys)."""

    def __init__(self, app, api_keys: Sequence[str], metrics_keys: Sequence[str]) -> None:
        self.app = app
        self.api_keys = list(api_keys)
        self.metrics_keys = list(metrics_keys)

    def _keys_for(self, path: str) -> list[str]:
        if path == "/v1" or path.startswith("/v1/"):
            return self.api_keys
        if path == "/metrics":
            return self.metrics_keys
        return []

    async def __call__(self, scope, receive, send) -> None:
        keys = self._keys_for(scope["path"]) if scope["type"] == "http" else []
        if not keys:
            await self.app(scope, receive, send)
            return
        offered = offered_key(scope)
        if offered is None:
            await send_error(
                send,
                401,
                "unauthenticated",
                "an API key is required: send it as X-API-Key (or Authorization: Bearer)",
                [(b"www-authenticate", b"Bearer")],
            )
        elif not key_matches(offered, keys):
            await send_error(send, 403, "forbidden", "the API key is not valid")
        else:
            await self.app(scope, receive, send)
