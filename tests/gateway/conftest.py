"""Fixtures local to the gateway tests.

- `classify_digits`: the fixture model's serving_default in-process (golden tests).
- `inprocess`: the app over a FakeUpstream, driven by Starlette's TestClient.
- `serve_app`: the app under the real uvicorn server and its protocol (gateway/server.py),
  in a thread on a free loopback port, for what only a real socket shows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import protocol_class
from tests.fixtures.gateway import TEST_FEEDBACK_SECRET
from tests.fixtures.processes import free_port, wait_until
from tests.gateway.fakes import FakeUpstream


@pytest.fixture(scope="session")
def classify_digits(trained_repository: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The fixture model's serving_default, loaded in-process: [N,28,28] -> classes [N].

    The golden tests judge preprocessing by what the real model makes of its output.
    """
    import tensorflow as tf

    signature = tf.saved_model.load(str(trained_repository / "mnist" / "1")).signatures[
        "serving_default"
    ]

    def classify(batch: np.ndarray) -> np.ndarray:
        outputs = signature(images=tf.constant(batch, dtype=tf.float32))
        return outputs["probabilities"].numpy().argmax(axis=1)

    return classify


def inprocess_settings(**overrides: object) -> Settings:
    """Development settings for an in-process gateway, without reading the environment."""
    values: dict[str, object] = {
        "feedback_secret": TEST_FEEDBACK_SECRET,
        "serving_target": "127.0.0.1:1",
        "host": "127.0.0.1",
        # The log writes files: the tests that check it turn it on with a directory.
        "log_enabled": False,
    }
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.fixture
def inprocess() -> Iterator[Callable[..., TestClient]]:
    """Factory `inprocess(upstream=None, grpc=False, **settings)` -> a started TestClient over
    a fake upstream (or the given one; with grpc=True the real gRPC client to
    GATEWAY_SERVING_TARGET); each is closed after the test."""
    with contextlib.ExitStack() as stack:

        def make(upstream=None, grpc: bool = False, **settings: object) -> TestClient:
            upstream = None if grpc else upstream or FakeUpstream()
            app = create_app(inprocess_settings(**settings), upstream=upstream)
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture
def serve_app() -> Iterator[Callable[..., str]]:
    """Factory `serve_app(upstream=None, **settings)` -> the base URL of the app served by
    uvicorn with GatewayHttpProtocol in a thread; every server is stopped after."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(upstream=None, **overrides: object) -> str:
        settings = inprocess_settings(port=free_port(), **overrides)
        app = create_app(settings, upstream=upstream or FakeUpstream())
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.port,
            http=protocol_class(settings),
            timeout_keep_alive=settings.keep_alive_timeout_seconds,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started, 10, 0.02, "uvicorn in a thread")
        return f"http://127.0.0.1:{settings.port}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
