"""The model server process: assemble the core and the protocol adapters, start, stop.

Start-up mirrors tensorflow_model_server: load the configured models first (refusing
version labels that name unavailable versions), then open the ports. On SIGTERM the server
stops accepting requests, finishes those in flight, and exits 0. Everything about models
lives in `ServerCore`; everything about wire formats in serving/protocol/.

Both ports speak two protocols over the one data plane: TF Serving's APIs and the Open
Inference Protocol (v2). gRPC registers both services on one server; the REST port sends
`/v2` and `/v2/...` to the v2 app and everything else to TF Serving's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.core import ServerCore
from serving.data_plane import DataPlane
from serving.errors import ServingError
from serving.flags import grpc_channel_arguments
from serving.protocol.asgi import PrefixDispatcher
from serving.protocol.tfs_grpc import ModelServicer, PredictionServicer
from serving.protocol.tfs_rest import TfsRestApp
from serving.protocol.v2_grpc import InferenceServicer
from serving.protocol.v2_rest import V2RestApp
from serving.server_config import ServerConfig

log = logging.getLogger("serving")

# TF Serving sets gRPC's message limits to INT_MAX.
_MAX_MESSAGE = 2**31 - 1
SHUTDOWN_GRACE_SECONDS = 30.0
# The names tensorflow_model_server's health service answers for (server.cc registers the
# short names; the full service names are gRPC's convention), besides "" (the server).
HEALTH_SERVICE_NAMES = (
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
)


class _RestListener:
    """uvicorn on the shared event loop, without uvicorn's own signal handling."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # the model server owns SIGTERM/SIGINT
                yield

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = Server(config)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task  # raises the bind error
                raise RuntimeError("REST server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True  # stop accepting, finish in-flight requests
        if self.task is not None:
            await self.task


def rest_app(
    plane: DataPlane, config: ServerConfig, accepting: Callable[[], bool] = lambda: True
) -> PrefixDispatcher:
    """The REST port's ASGI app: `/v2` paths to the v2 app, the rest to TF Serving's."""
    flags = config.flags
    timeout_seconds = flags.rest_api_timeout_in_ms / 1000
    return PrefixDispatcher(
        "/v2",
        V2RestApp(
            plane,
            timeout_seconds=timeout_seconds,
            max_body_bytes=flags.rest_api_max_body_bytes,
            accepting=accepting,
        ),
        TfsRestApp(
            plane,
            metrics_path=config.metrics_path,
            timeout_seconds=timeout_seconds,
            max_body_bytes=flags.rest_api_max_body_bytes,
            enable_cors=flags.rest_api_enable_cors_support,
            accepting=accepting,
        ),
    )


class ModelServer:
    """One `python -m serving` process: a ServerCore behind gRPC and REST listeners."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.core = ServerCore(config, compact_heap=True)
        self.health = health_aio.HealthServicer()
        self.accepting = True
        self._grpc: grpc.aio.Server | None = None
        self._rest: _RestListener | None = None
        self._background: list[asyncio.Task] = []
        self._state_changed = asyncio.Event()

    async def start(self) -> None:
        """Load the models, then open the ports (raises ServingError or OSError)."""
        loop = asyncio.get_running_loop()
        self.core.add_listener(lambda: loop.call_soon_threadsafe(self._state_changed.set))
        await asyncio.to_thread(self.core.load_initial)
        flags = self.config.flags
        plane = self.core.data_plane
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
                *grpc_channel_arguments(flags),
            ]
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(plane, tensor_content=flags.enable_serialization_as_tensor_content),
            server,
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(plane, self.core.reload), server
        )
        InferenceServicer(plane, accepting=lambda: self.accepting).add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        addresses = []
        if flags.port:
            addresses.append(f"{flags.bind_address}:{flags.port}")
        if flags.grpc_socket_path:
            addresses.append(f"unix:{flags.grpc_socket_path}")
        for address in addresses:
            if server.add_insecure_port(address) == 0:
                raise OSError(f"cannot bind gRPC to {address}")
        await self._publish_state()
        await server.start()
        self._grpc = server
        for address in addresses:
            log.info("Running gRPC ModelServer at %s ...", address)
        if flags.rest_api_port:
            if flags.rest_api_port == flags.port:
                log.error(
                    "server_options.http_port cannot be same as grpc_port. Please use a "
                    "different port for HTTP/REST API. Skipped exporting HTTP/REST API."
                )
            else:
                app = rest_app(plane, self.config, accepting=lambda: self.accepting)
                self._rest = _RestListener(app, flags.bind_address, flags.rest_api_port)
                await self._rest.start()
                log.info(
                    "Exporting HTTP/REST API at:%s:%d ...", flags.bind_address, flags.rest_api_port
                )
        self._background = [
            asyncio.create_task(self._watch_state()),
            asyncio.create_task(self.core.poll_file_system()),
            asyncio.create_task(self.core.poll_config_file()),
        ]

    async def stop(self) -> None:
        """Refuse new requests, finish those in flight, close the ports."""
        log.info("shutting down: draining in-flight requests")
        self.accepting = False
        await self._publish_state()
        await self.health.enter_graceful_shutdown()
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(SHUTDOWN_GRACE_SECONDS))
        if self._rest is not None:
            stops.append(self._rest.stop())
        await asyncio.gather(*stops)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.core.executor.shutdown(wait=True)
        log.info("stopped")

    async def _watch_state(self) -> None:
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            await self._publish_state()

    async def _publish_state(self) -> None:
        """Health follows the core: "" is SERVING only while every model has an AVAILABLE
        version; each model name and the service names follow their own availability."""
        manager = self.core.manager
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        ready = self.accepting and manager.all_models_available()
        for name in ("", *HEALTH_SERVICE_NAMES):
            await self.health.set(name, serving if ready else not_serving)
        for name in manager.model_names():
            up = self.accepting and bool(manager.available_versions(name))
            await self.health.set(name, serving if up else not_serving)


async def run_server(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    server = ModelServer(config)
    try:
        await server.start()
    except ServingError as error:
        log.error("Failed to start server. Error: %s: %s", error.code.name, error.message)
        return 1
    except OSError as error:
        log.error("Failed to start server. Error: %s", error)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()
    return 0
