"""A no-op stand-in for the gateway (HTTP) and the model server (gRPC), to measure Locust itself.

Every answer is a canned, valid response, so the load users' checks pass and the target's
cost per request is a few microseconds: a run against it measures how many requests the
load generator can drive, not how fast the stack is. `python -m loadtests scaling` uses it.

- HTTP (`asyncio` + httptools on uvloop when installed), the gateway's routes for model
  `mnist`: `GET /readyz`, `POST .../predict` and `.../predict/image` (one prediction: send
  one image per request, LOAD_BATCH_SIZE=1), `POST /v1/feedback` (one item accepted),
  `GET /v1/models/mnist` (version 1 AVAILABLE) and `GET /v1/models`.
- gRPC: `PredictionService/Predict` answers `classes` = [0], whatever was asked.

Run: `python -m loadtests.noop_target --http-port P --grpc-port Q` (127.0.0.1 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from concurrent import futures
from dataclasses import dataclass
from typing import cast

import grpc
import httptools

PREDICT_BODY = json.dumps(
    {"predictions": [{"class": 0, "confidence": 1.0, "prediction_id": "noop"}]}
).encode()
READY_BODY = b'{"ready":true}'
FEEDBACK_BODY = b'{"accepted":1,"results":[{"prediction_id":"noop","outcome":"correct"}]}'
MODEL_BODY = b'{"name":"mnist","versions":[{"version":1,"state":"AVAILABLE"}]}'
MODELS_BODY = b'{"models":[{"name":"mnist","versions":[{"version":1,"state":"AVAILABLE"}]}]}'
NOT_FOUND_BODY = b'{"error":{"code":"not_found","message":"no-op target"}}'
# PredictResponse{outputs: {"classes": TensorProto{dtype: DT_INT64, shape [1], int64_val [0]}}},
# serialised once by hand so the target needs no protobuf classes.
_CLASSES_TENSOR = bytes([0x08, 0x09, 0x12, 0x04, 0x12, 0x02, 0x08, 0x01, 0x50, 0x00])
_OUTPUT_ENTRY = bytes([0x0A, 0x07]) + b"classes" + bytes([0x12, len(_CLASSES_TENSOR)])
_OUTPUT_ENTRY += _CLASSES_TENSOR
PREDICT_RESPONSE = bytes([0x0A, len(_OUTPUT_ENTRY)]) + _OUTPUT_ENTRY


def http_response(status: str, body: bytes) -> bytes:
    """A keep-alive HTTP/1.1 response with a JSON body."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


ROUTES = {
    (b"GET", b"/readyz"): http_response("200 OK", READY_BODY),
    (b"GET", b"/healthz"): http_response("200 OK", READY_BODY),
    (b"POST", b"/v1/models/mnist/predict"): http_response("200 OK", PREDICT_BODY),
    (b"POST", b"/v1/models/mnist/predict/image"): http_response("200 OK", PREDICT_BODY),
    (b"POST", b"/v1/feedback"): http_response("200 OK", FEEDBACK_BODY),
    (b"GET", b"/v1/models/mnist"): http_response("200 OK", MODEL_BODY),
    (b"GET", b"/v1/models"): http_response("200 OK", MODELS_BODY),
}
NOT_FOUND = http_response("404 Not Found", NOT_FOUND_BODY)


def route(method: bytes, path: bytes) -> bytes:
    """The canned response for a request line."""
    return ROUTES.get((method, path.split(b"?", 1)[0]), NOT_FOUND)


class NoopHttpProtocol(asyncio.Protocol):
    """Parse requests with httptools and answer each with a canned response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP server's transport writes; uvloop's do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks; a URL may arrive in pieces.
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(route(self.parser.get_method(), self.url))


@dataclass
class NoopGrpcServer:
    """The gRPC half, on its own thread pool."""

    server: grpc.Server
    port: int


def start_grpc(host: str, port: int) -> NoopGrpcServer:
    """Serve the canned Predict on host:port (0 picks a free port)."""
    # Raw bytes in and out: no (de)serialisation on the target's side.
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(lambda _raw, _ctx: PREDICT_RESPONSE)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return NoopGrpcServer(server, bound)


async def serve_http(host: str, port: int) -> None:
    """Serve HTTP until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(NoopHttpProtocol, host, port, reuse_address=True)
    async with server:
        await server.serve_forever()


def target_command(http_port: int, grpc_port: int) -> list[str]:
    """The command line that runs this target on loopback (from the repository root)."""
    return [
        sys.executable,
        "-m",
        "loadtests.noop_target",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]


def main(argv: list[str] | None = None) -> None:
    """Run both halves until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    grpc_server = start_grpc(args.host, args.grpc_port)
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop is slower, and still far cheaper than Locust
        uvloop = None
    run = uvloop.run if uvloop is not None else asyncio.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(serve_http(args.host, args.http_port))
    finally:
        grpc_server.server.stop(grace=None)


if __name__ == "__main__":
    main()
