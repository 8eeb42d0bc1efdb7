"""In-process adapters over a real data plane: the TF Serving REST app (httpx's ASGI
transport) over the `core` fixture, and a ServerCore serving `v2_repository`
(tests/fixtures/serving.py) for the Open Inference Protocol adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from serving.core import ServerCore
from serving.protocol.tfs_rest import TfsRestApp
from serving.server_config import BatchingOptions
from tests.serving.helpers import model_config, server_config_for

# Small enough that a test can go over it with a 2 MB tensor; mnist requests are 3 KB.
MAX_REQUEST_TENSOR_BYTES = 1 << 20


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


@pytest.fixture(scope="module")
def v2_core(v2_repository: Path) -> Iterator[ServerCore]:
    """A loaded core over `v2_repository`, batching as in production (one per module)."""
    models = model_config(
        ("mnist", v2_repository / "mnist"), ("tfs_corpus", v2_repository / "tfs_corpus"), stable=1
    )
    config = server_config_for(
        models,
        BatchingOptions(max_batch_size=64, batch_timeout_micros=5000),
        max_request_tensor_bytes=MAX_REQUEST_TENSOR_BYTES,
    )
    core = ServerCore(config)
    core.load_initial()
    yield core
    core.close()
