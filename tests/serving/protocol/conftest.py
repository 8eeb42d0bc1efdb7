"""In-process adapters over a real data plane: a ServerCore on real SavedModels, called
through the REST app (httpx's ASGI transport) or an in-process gRPC server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from serving.core import ServerCore
from serving.protocol.tfs_rest import TfsRestApp


def rest_app(core: ServerCore, **options) -> TfsRestApp:
    """The REST app over `core`, with the server's defaults unless `options` change them."""
    settings = {
        "metrics_path": "/monitoring/prometheus/metrics",
        "timeout_seconds": 30.0,
        "max_body_bytes": 64 << 20,
        **options,
    }
    return TfsRestApp(core.data_plane, **settings)


def call(app, method: str, path: str, body: bytes | str = b"", **headers) -> httpx.Response:
    """One request through the ASGI app, on a fresh event loop."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.request(method, path, content=body, headers=headers)

    return asyncio.run(send())


@pytest.fixture
def rest(core: ServerCore) -> Callable[..., httpx.Response]:
    """`rest(method, path, body)` against the default REST app over `core`."""
    app = rest_app(core)
    return lambda method, path, body=b"", **headers: call(app, method, path, body, **headers)
