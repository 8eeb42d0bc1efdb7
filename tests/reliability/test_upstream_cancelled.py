"""An upstream that ends calls CANCELLED, as gRPC servers do to calls pending at shutdown.

gRPC core ends calls that reached a server but were not yet matched to a handler with
CANCELLED when the server shuts down (grpc/grpc#41785), although nobody cancelled them: the
server went away. The model-server SIGTERM scenario hits this now and then; this test
reproduces it every time with a gRPC server on loopback that answers Predict exactly so.
The gateway should treat it like UNAVAILABLE: a 503 with Retry-After, never a 502.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import httpx
import numpy as np
import pytest

from tests.fixtures.processes import free_port
from tests.reliability.stack import PREDICT_PATH, predict_body

pytestmark = pytest.mark.reliability


@pytest.fixture
def cancelling_upstream():
    """A PredictionService on 127.0.0.1 whose every Predict ends CANCELLED."""

    def predict(_request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(predict)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_a_call_cancelled_by_the_upstream_is_a_503_with_retry_after(
    cancelling_upstream, start_gateway
) -> None:
    gateway = start_gateway(cancelling_upstream, wait="healthy")
    digits = np.zeros((1, 28, 28), dtype=np.uint8)
    response = httpx.post(
        f"{gateway.url}{PREDICT_PATH}",
        content=predict_body(digits),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 503, response.text
    assert response.headers.get("retry-after")
    assert response.json()["error"]["code"] == "upstream_unavailable"
