"""ServerCore: model lifecycle end to end, as TF Serving's ServerCore owns it.

It owns the version manager, the batcher, the executor TensorFlow calls run in, loading
(with warmup replay and load metrics), the file-system and config-file pollers, `reload()`
(validated once, for the gRPC reload call and the config-file poll alike), and the unload
hook that frees a version. It publishes state changes to listeners (health, gauges) and
knows nothing of gRPC or HTTP: the protocol adapters reach it through its `DataPlane`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from serving.batching import Batcher
from serving.data_plane import DataPlane
from serving.errors import InvalidArgumentError, ServingError
from serving.manager import Loader, ModelManager
from serving.metrics import ServingMetrics
from serving.servable import Servable, load_servable, run_warmup
from serving.server_config import (
    ConfigError,
    ServerConfig,
    read_model_config_file,
    validate_model_server_config,
)

log = logging.getLogger("serving")

# TensorFlow calls without batching run on this many executor threads.
DEFAULT_EXECUTOR_THREADS = 4


class ServerCore:
    """Loads, serves, reloads and unloads models; see the module docstring."""

    def __init__(
        self, config: ServerConfig, loader: Loader | None = None, *, compact_heap: bool = False
    ) -> None:
        """`compact_heap`: freeze long-lived objects out of the collector after each change
        of versions (`_compact_heap`); the server process sets it, in-process tests not."""
        self.config = config
        self._compacts_heap = compact_heap
        flags = config.flags
        self.metrics = ServingMetrics()
        workers = config.batching.num_batch_threads if config.batching else DEFAULT_EXECUTOR_THREADS
        self.executor = ThreadPoolExecutor(max_workers=max(workers, 2), thread_name_prefix="tf")
        self.batcher = (
            Batcher(config.batching, self.executor, self.metrics) if config.batching else None
        )
        self._listeners: list[Callable[[], None]] = []
        self.manager = ModelManager(
            config.models,
            loader or self._load_version,
            allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
            on_change=self._changed,
            on_unload=self._free,
        )
        self.data_plane = DataPlane(
            self.manager,
            self.executor,
            self.metrics,
            self.batcher,
            check_method_names=flags.enable_signature_method_name_check,
            max_request_tensor_bytes=flags.max_request_tensor_bytes,
        )
        self._tags = frozenset(t for t in flags.saved_model_tags.split(",") if t)
        self._last_config_text: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def load_initial(self) -> None:
        """Load every configured model and install its labels (before any port opens).

        Raises ServingError when a label names a version that is not available (and the
        flags do not allow it), as tensorflow_model_server refuses to start then.
        """
        self.manager.poll()
        self.manager.apply_labels()
        self._compact_heap()
        if self.config.flags.model_config_file:
            with contextlib.suppress(OSError):
                self._last_config_text = Path(self.config.flags.model_config_file).read_text()

    def reload(self, new_config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply a new ModelServerConfig (HandleReloadConfigRequest or the config poll).

        Blocking (loads versions): call it off the event loop. INVALID_ARGUMENT for a config
        server_core.cc would refuse; FAILED_PRECONDITION for labels on unavailable versions.
        """
        try:
            validate_model_server_config(new_config)
        except ConfigError as error:
            raise InvalidArgumentError(str(error)) from None
        loaded = self._loaded_keys()
        try:
            self.manager.reload_config(new_config)
        finally:
            if self._loaded_keys() != loaded:
                self._compact_heap()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from any thread) whenever versions or labels change."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Unload every version and stop the executor (a clean stop for in-process use)."""
        self.manager.unload_all()
        self.executor.shutdown(wait=True)

    def poll(self) -> None:
        """One pass over the model base paths (blocking): load and unload versions."""
        loaded = self._loaded_keys()
        self.manager.poll()
        if self._loaded_keys() != loaded:
            self._compact_heap()

    def _loaded_keys(self) -> set[tuple]:
        manager = self.manager
        return {
            manager.resolve(name, version).key
            for name in manager.model_names()
            for version in manager.available_versions(name)
        }

    def _compact_heap(self) -> None:
        """Collect, then freeze what is left out of the garbage collector's reach.

        A loaded TensorFlow process holds over a million Python objects that live as long as
        the process. Left in the collector's oldest generation, each full collection walked
        them all: 330-500 ms with the event loop stopped, several times a minute under
        load, which was the whole p99 of REST and gRPC at 64 connections. Frozen, they are
        skipped. Versions change rarely: each change unfreezes first, so that an unloaded
        version's cycles can be collected, and pays for one collection.
        """
        if not self._compacts_heap:
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    # -- pollers (event loop) ------------------------------------------------------------

    async def poll_file_system(self) -> None:
        """Look for new or removed versions every --file_system_poll_wait_seconds."""
        wait = self.config.flags.file_system_poll_wait_seconds
        while wait > 0:
            await asyncio.sleep(wait)
            await asyncio.to_thread(self.poll)

    async def poll_config_file(self) -> None:
        """Re-read --model_config_file every --model_config_file_poll_wait_seconds; a changed
        file is applied like a reload, an invalid one is logged and the old config stays."""
        flags = self.config.flags
        wait = flags.model_config_file_poll_wait_seconds
        while flags.model_config_file and wait > 0:
            await asyncio.sleep(wait)
            await asyncio.to_thread(self.reload_config_file_if_changed)

    def reload_config_file_if_changed(self) -> bool:
        """One config-file poll; True when a changed file was applied."""
        path = self.config.flags.model_config_file
        try:
            text = Path(path).read_text()
            if text == self._last_config_text:
                return False
            self._last_config_text = text
            self.reload(read_model_config_file(path))
        except (ConfigError, ServingError, OSError) as error:
            log.error("model config reload failed, keeping the previous one: %s", error)
            return False
        log.info("applied new %s", path)
        return True

    # -- hooks ---------------------------------------------------------------------------

    def _load_version(self, name: str, version: int, path: Path) -> Servable:
        """The manager's loader: load the SavedModel, then replay its warmup requests."""
        flags = self.config.flags
        servable = None
        try:
            servable = load_servable(name, version, path, tags=self._tags)
            if flags.enable_model_warmup:
                run_warmup(servable, flags.num_request_iterations_for_warmup)
        except ServingError as error:
            if servable is not None:
                servable.close()
            self.metrics.load_attempt_count.inc(str(path), error.code.name)
            raise
        self.metrics.load_attempt_count.inc(str(path), "OK")
        return servable

    def _free(self, servable: Servable) -> None:
        """The unload hook: called once the version has no request in flight."""
        if self.batcher is not None:
            self.batcher.drop(servable.key)
        servable.close()

    def _changed(self) -> None:
        """Versions or labels changed: refresh the gauges, then tell the listeners."""
        metrics = self.metrics
        for name in self.manager.model_names():
            metrics.loaded_versions.set(name, value=len(self.manager.available_versions(name)))
            with contextlib.suppress(ServingError):
                for status in self.manager.statuses(name):
                    metrics.model_version_state.set(
                        name, str(status.version), value=int(status.state)
                    )
        for listener in self._listeners:
            listener()
