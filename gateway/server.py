"""Serving the app with uvicorn, plus the read timeout and connection cap uvicorn lacks.

uvicorn closes idle keep-alive connections, but has no timeout for a request's headers:
a client that connects and sends a byte now and then keeps its socket for ever. An ASGI
middleware cannot help there, because no ASGI app is called before the headers are
complete. So `GatewayHttpProtocol`, a subclass of uvicorn's httptools protocol, times the
header phase itself and caps open connections; the body phase is timed where the app
reads it (RequestContextMiddleware), so a slow body gets a 408 in the one error shape.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import Settings
from gateway.errors import raw_error_response
from gateway.middleware import send_error


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap."""

    # Set by protocol_class() from the settings.
    header_timeout_seconds = 10.0
    max_connections = 64
    retry_after_seconds = 1

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over_capacity = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if over_capacity:
            # Answered once its headers are in, so the client reads a clear 503 rather
            # than a reset; the header deadline still bounds how long that may take.
            self.app = self._overloaded
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A response sent before its request's body arrived (a 401, a 413) leaves the
        # rest of that body on the wire; uvicorn would keep reading and discarding it,
        # and a client that keeps sending would hold the connection for ever.
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.transport.close()
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.header_timeout_seconds, self._headers_too_slow
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            message = (
                f"the request's headers did not arrive within {self.header_timeout_seconds:g}s "
                "(GATEWAY_HEADER_TIMEOUT_SECONDS)"
            )
            self.transport.write(raw_error_response(408, "request_timeout", message))
        self.transport.close()

    async def _overloaded(self, scope, receive, send) -> None:
        await send_error(
            send,
            503,
            "overloaded",
            f"the gateway holds {self.max_connections} connections already "
            "(GATEWAY_MAX_CONNECTIONS); retry shortly",
            [(b"retry-after", str(self.retry_after_seconds).encode())],
        )


def protocol_class(settings: Settings) -> type[GatewayHttpProtocol]:
    """GatewayHttpProtocol with the settings' timeout and cap."""
    return type(
        "GatewayHttpProtocol",
        (GatewayHttpProtocol,),
        {
            "header_timeout_seconds": settings.header_timeout_seconds,
            "max_connections": settings.max_connections,
            "retry_after_seconds": settings.retry_after_seconds,
        },
    )


# The event loop shares the GIL with the image decoders' threads; a thread wanting it
# waits up to this long for the holder to let go (Python's default is 5 ms), so a
# shorter interval keeps /healthz and small requests quick while images decode.
GIL_SWITCH_INTERVAL_SECONDS = 0.001


def run(app, settings: Settings) -> None:
    """Serve `app` until SIGTERM/SIGINT."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(settings),
        log_level=settings.log_level,
        # Request logs cost throughput; the metrics and X-Request-ID cover them.
        access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        timeout_graceful_shutdown=5,
    )
