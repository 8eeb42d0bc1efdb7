"""Pure-ASGI middleware (cheaper per request than BaseHTTPMiddleware).

`RequestContextMiddleware` does three things every request needs: an X-Request-ID,
the request count/latency metrics by route template, and the body-size limit enforced
while the body is read.
"""

from __future__ import annotations

import json
import time
import uuid

from starlette.routing import BaseRoute, Match

from gateway.errors import PayloadTooLargeError, error_body
from gateway.metrics import GatewayMetrics

MAX_REQUEST_ID_LENGTH = 128


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def route_template(routes: list[BaseRoute], scope) -> str:
    """The template of the route `scope` falls under, or "unmatched".

    Used for requests answered before routing (a 413 on Content-Length, a 405): the metric
    label must be a template, never the path a client typed, or label cardinality is
    unbounded.
    """
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", "unmatched")
    return "unmatched"


class RequestContextMiddleware:
    """Request id, metrics and the streaming body limit."""

    def __init__(
        self, app, metrics: GatewayMetrics, max_body_bytes: int, routes: list[BaseRoute]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
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
        limit = self.max_body_bytes

        async def send_with_context(message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._reject_too_large(send_with_context, int(declared), limit)
                return
            received = 0

            async def receive_limited():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        # Raised inside the endpoint's body read, so the error handler
                        # answers 413 without the rest of the body ever being buffered.
                        raise PayloadTooLargeError(
                            f"the body is over the {limit}-byte limit (GATEWAY_MAX_BODY_BYTES)"
                        )
                return message

            await self.app(scope, receive_limited, send_with_context)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or route_template(self.routes, scope)
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(template, scope["method"], str(status_holder[0])).inc()
            self.metrics.request_duration.labels(template).observe(elapsed)

    async def _reject_too_large(self, send, declared: int, limit: int) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"the body is {declared} bytes, over the {limit}-byte limit "
                "(GATEWAY_MAX_BODY_BYTES)",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
