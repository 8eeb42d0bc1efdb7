"""The data plane: Predict, metadata and status over the model manager, protocol-free.

gRPC and REST are thin adapters over `DataPlane`; both get the same validation, batching,
errors and metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor

import numpy as np

from serving.batching import Batcher
from serving.errors import InvalidArgumentError, ServingError
from serving.manager import ModelManager, VersionStatus
from serving.metrics import ServingMetrics
from serving.servable import Servable, Signature


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """Outputs of one Predict, with the version and signature that produced them."""

    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


class DataPlane:
    """Serves Predict / GetModelMetadata / GetModelStatus for every configured model."""

    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        metrics: ServingMetrics,
        batcher: Batcher | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._executor = executor
        self._batcher = batcher

    async def predict(
        self,
        model_name: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: Sequence[str],
        entrypoint: str,
    ) -> PredictResult:
        """Run one Predict; records TF Serving's request count and latency metrics."""
        started = time.perf_counter()
        status = "OK"
        served_version = ""
        self.metrics.inflight_requests.add(model_name, amount=1)
        try:
            servable = self.manager.resolve(model_name, version, label)
            served_version = str(servable.version)
            signature = servable.signature(signature_name)
            servable.check_inputs(signature, inputs)
            aliases = self._output_aliases(signature, output_filter)
            outputs = await self._run(servable, signature, inputs)
            if aliases is not None:
                outputs = {alias: outputs[alias] for alias in aliases}
            return PredictResult(model_name, servable.version, signature.name, outputs)
        except ServingError as error:
            status = error.code.name
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        finally:
            self.metrics.record_request(
                model_name,
                served_version,
                status,
                entrypoint,
                (time.perf_counter() - started) * 1e6,
            )

    @staticmethod
    def _output_aliases(signature: Signature, output_filter: Sequence[str]) -> list[str] | None:
        """The outputs `output_filter` asks for, in its order; None (every output) if empty."""
        if not output_filter:
            return None
        outputs = signature.definition.outputs
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in outputs:
                raise InvalidArgumentError(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(outputs))}}}."
                )
            if alias in seen:
                raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return list(output_filter)

    def _run(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> Awaitable[dict[str, np.ndarray]]:
        """The outputs of one run, batched or in the executor (an awaitable, not a coroutine
        of its own: one frame fewer per request)."""
        metrics = self.metrics

        def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            outputs = servable.run(signature, batch)
            metrics.runtime_latency.observe(
                servable.name, "Predict", "TF2", value=(time.perf_counter() - started) * 1e6
            )
            return outputs

        if self._batcher is not None and signature.batchable and inputs:
            layout = tuple(
                (alias, array.dtype.str, array.shape[1:]) for alias, array in inputs.items()
            )
            rows = {array.shape[0] for array in inputs.values()}
            if len(rows) == 1:
                key = (id(servable), servable.version, signature.name, layout)
                return self._batcher.submit(key, servable.name, run, inputs)
        return asyncio.get_running_loop().run_in_executor(self._executor, run, inputs)

    def signature_for(
        self, model_name: str, version: int | None, label: str | None, signature_name: str
    ) -> Signature:
        """The signature a REST request names (REST reports an unknown one as 400)."""
        servable = self.manager.resolve(model_name, version, label)
        key = signature_name or "serving_default"
        signature = servable.signatures.get(key)
        if signature is None:
            raise InvalidArgumentError(
                f'Serving signature name: "{key}" not found in signature def'
            )
        return signature

    def metadata(self, model_name: str, version: int | None, label: str | None) -> Servable:
        """The servable whose signature_def map GetModelMetadata returns."""
        return self.manager.resolve(model_name, version, label)

    def status(
        self, model_name: str, version: int | None, label: str | None
    ) -> list[VersionStatus]:
        """GetModelStatus: every known version, or the one a version / label names."""
        if label:
            version = self.manager.version_for_label(model_name, label)
        return self.manager.statuses(model_name, version)
