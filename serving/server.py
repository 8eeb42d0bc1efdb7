"""Assemble and run the embedded model server: manager, data plane, gRPC and REST.

Start-up mirrors tensorflow_model_server: load the configured models first (refusing
version labels that name unavailable versions), then open the ports. On SIGTERM the server
stops accepting requests, finishes those in flight, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.batching import Batcher
from serving.config import (
    ConfigError,
    ServerConfig,
    read_model_config_file,
    validate_model_server_config,
)
from serving.data_plane import DataPlane
from serving.errors import InvalidArgumentError, ServingError
from serving.grpc_api import ModelServicer, PredictionServicer
from serving.manager import ModelManager, VersionState
from serving.metrics import ServingMetrics
from serving.servable import Servable, load_servable, run_warmup

log = logging.getLogger("serving")

# TF Serving sets gRPC's message limits to INT_MAX.
_MAX_MESSAGE = 2**31 - 1
SHUTDOWN_GRACE_SECONDS = 30.0


def load_version(
    name: str, version: int, path: Path, *, warmup: bool, metrics: ServingMetrics
) -> Servable:
    """Loader for the manager: load the SavedModel, then replay its warmup requests."""
    try:
        servable = load_servable(name, version, path)
        if warmup:
            run_warmup(servable)
    except ServingError as error:
        metrics.load_attempt_count.inc(str(path), error.code.name)
        raise
    metrics.load_attempt_count.inc(str(path), "OK")
    return servable


class _RestServer:
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


async def run_server(server_config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    loop = asyncio.get_running_loop()
    metrics = ServingMetrics()
    flags = server_config.flags
    config = server_config.models
    batching = server_config.batching
    metrics_path = server_config.metrics_path

    health = health_aio.HealthServicer()
    accepting = True
    changed = asyncio.Event()

    def on_change() -> None:  # called on the poll thread
        loop.call_soon_threadsafe(changed.set)

    loader = functools.partial(load_version, warmup=flags.enable_model_warmup, metrics=metrics)
    manager = ModelManager(
        config,
        loader,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
        on_change=on_change,
    )

    async def publish_state() -> None:
        """Health and gauges follow the manager: SERVING only when every model is AVAILABLE."""
        ready = accepting and manager.all_models_available()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await health.set("", status)
        for name in manager.model_names():
            available = manager.available_versions(name)
            await health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if available and accepting
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )
            metrics.loaded_versions.set(name, value=len(available))
            with contextlib.suppress(ServingError):
                for status_entry in manager.statuses(name):
                    metrics.model_version_state.set(
                        name, str(status_entry.version), value=int(status_entry.state)
                    )

    # Like tensorflow_model_server: load first, then open the ports.
    await asyncio.to_thread(manager.poll)
    try:
        manager.apply_labels()
    except ServingError as error:
        log.error("%s", error.message)
        return 1

    workers = batching.num_batch_threads if batching else 4
    executor = ThreadPoolExecutor(max_workers=max(workers, 2), thread_name_prefix="tf")
    batcher = Batcher(batching, executor, metrics) if batching else None
    plane = DataPlane(manager, executor, metrics, batcher)

    def reload(new_config) -> None:
        try:
            validate_model_server_config(new_config)
        except ConfigError as error:
            raise InvalidArgumentError(str(error)) from None
        manager.reload_config(new_config)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(plane), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(plane, reload), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    grpc_address = f"{flags.bind_address}:{flags.port}"
    if server.add_insecure_port(grpc_address) == 0:
        log.error("cannot bind gRPC to %s", grpc_address)
        return 1
    await publish_state()
    await server.start()
    log.info("Running gRPC ModelServer at %s ...", grpc_address)

    rest: _RestServer | None = None
    if flags.rest_api_port:
        from serving.rest_api import build_app

        app = build_app(plane, metrics_path, flags.rest_api_timeout_in_ms / 1000, lambda: accepting)
        rest = _RestServer(app, flags.bind_address, flags.rest_api_port)
        await rest.start()
        log.info("Exporting HTTP/REST API at:%s:%d ...", flags.bind_address, flags.rest_api_port)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def watch_state() -> None:
        while True:
            await changed.wait()
            changed.clear()
            await publish_state()

    async def poll_file_system() -> None:
        while flags.file_system_poll_wait_seconds > 0:
            await asyncio.sleep(flags.file_system_poll_wait_seconds)
            await asyncio.to_thread(manager.poll)

    async def poll_config_file() -> None:
        last = Path(flags.model_config_file).read_text() if flags.model_config_file else ""
        while flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
            await asyncio.sleep(flags.model_config_file_poll_wait_seconds)
            try:
                text = Path(flags.model_config_file).read_text()
                if text == last:
                    continue
                last = text
                new_config = read_model_config_file(flags.model_config_file)
                await asyncio.to_thread(reload, new_config)
                log.info("applied new %s", flags.model_config_file)
            except (ConfigError, ServingError, OSError) as error:
                log.error("model config reload failed, keeping the previous one: %s", error)

    background = [
        asyncio.create_task(watch_state()),
        asyncio.create_task(poll_file_system()),
        asyncio.create_task(poll_config_file()),
    ]
    await stop.wait()

    log.info("shutting down: draining in-flight requests")
    accepting = False
    await publish_state()
    await health.enter_graceful_shutdown()
    stops = [server.stop(SHUTDOWN_GRACE_SECONDS)]
    if rest is not None:
        stops.append(rest.stop())
    await asyncio.gather(*stops)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    executor.shutdown(wait=True)
    log.info("stopped")
    return 0


__all__ = ["VersionState", "run_server"]
