"""The gRPC client of TF Serving: one long-lived grpc.aio channel, a deadline on every call.

Retries on UNAVAILABLE are gRPC's own (the service config's retryPolicy), and
`round_robin` spreads calls over every address a `dns:///` target resolves to, e.g. each
TF Serving pod behind a headless Service.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio
import numpy as np

from gateway.config import Settings
from gateway.errors import (
    InvalidInputError,
    ModelNotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.metrics import GatewayMetrics
from gateway.tensors import fill_float_tensor, to_numpy
from gateway.tfs_protos import (
    GET_MODEL_METADATA_METHOD,
    GET_MODEL_STATUS_METHOD,
    PREDICT_METHOD,
    Messages,
)

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
logger = logging.getLogger("gateway")


def service_config() -> dict[str, Any]:
    """gRPC service config: round_robin balancing and retries on UNAVAILABLE."""
    retry_policy = {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "tensorflow.serving.PredictionService"},
                    {"service": "tensorflow.serving.ModelService"},
                ],
                "retryPolicy": retry_policy,
            }
        ],
    }


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel arguments: message sizes, retries, keepalive."""
    return [
        ("grpc.service_config", json.dumps(service_config())),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", settings.max_grpc_message_bytes),
        ("grpc.max_receive_message_length", settings.max_grpc_message_bytes),
        # Notice a dead pod behind a load balancer instead of waiting on it for ever.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # gRPC's reconnect backoff grows to 120 s by default; cap it so a restarted model
        # server is used again within seconds.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 3_000),
    ]


@dataclass(frozen=True)
class VersionSelector:
    """Which version to ask for: a number, a label, or neither (the server's latest)."""

    version: int | None = None
    label: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"version {self.version}"
        return f"label {self.label!r}" if self.label else "available version"


@dataclass(frozen=True)
class PredictResult:
    """The model's answer: which version served it, and the [N, 10] probabilities."""

    version: int
    probabilities: np.ndarray


@dataclass(frozen=True)
class VersionStatus:
    """One row of GetModelStatus."""

    version: int
    state: str
    error_code: int
    error_message: str


def map_rpc_error(error: grpc.aio.AioRpcError, model: str, selector: VersionSelector, settings):
    """Turn a gRPC status into the gateway's exception (404, 400/422, 503, 504, 502).

    The model server's details are passed on for the client's own mistakes (an unknown
    version, a bad input); for faults they are only logged, since gRPC's connection
    errors name internal addresses.
    """
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFoundError(f"model {model!r} has no {selector.describe()}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        # TF Serving reports an unknown version label as INVALID_ARGUMENT.
        if selector.label and "label" in details.lower():
            return ModelNotFoundError(f"model {model!r} has no {selector.describe()}: {details}")
        return InvalidInputError(f"the model rejected the input: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION and selector.label:
        return ModelNotFoundError(f"model {model!r} has no {selector.describe()}: {details}")
    logger.warning("model server call for %r failed: %s: %s", model, code.name, details)
    retry_after = {"Retry-After": str(settings.retry_after_seconds)}
    # The gateway never cancels its own calls, so CANCELLED means the server went away
    # mid-call (gRPC ends calls pending at server shutdown so: grpc/grpc#41785).
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ):
        return UpstreamUnavailableError(
            f"the model server is unavailable ({code.name}); retry shortly", headers=retry_after
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UpstreamTimeoutError(
            f"the model server did not answer within {settings.request_timeout_seconds}s "
            "(GATEWAY_REQUEST_TIMEOUT_SECONDS)"
        )
    return UpstreamError(f"the model server failed ({code.name}); see the gateway log")


class Upstream(Protocol):
    """What the gateway needs of a model server; `ServingClient` is the real one."""

    async def start(self) -> None:
        """Open connections (inside the running event loop)."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...

    async def predict(
        self,
        model: str,
        selector: VersionSelector,
        batch: np.ndarray,
        timeout: float,
        shadow: bool = False,
    ) -> PredictResult:
        """Probabilities [N, 10] for a float32 [N, 28, 28] batch, and the serving version.

        `shadow`: a shadow copy, kept out of the served versions' metrics.
        """
        ...

    async def reference_stats(
        self, model: str, version: int, signature_name: str
    ) -> dict[str, np.ndarray]:
        """The outputs of the version's no-input reference signature (gateway/drift.py)."""
        ...

    async def model_status(
        self, model: str, selector: VersionSelector | None = None
    ) -> list[VersionStatus]:
        """Every version the server knows for `model`, with its state."""
        ...

    async def model_signatures(
        self, model: str, selector: VersionSelector | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(version, {signature: {method_name, inputs, outputs}}) of the served version."""
        ...


class ServingClient:
    """Calls TF Serving's PredictionService and ModelService over one channel."""

    def __init__(self, settings: Settings, messages: Messages, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.messages = messages
        self.metrics = metrics
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}

    async def start(self) -> None:
        """Open the channel (inside the running event loop)."""
        m = self.messages
        self._channel = grpc.aio.insecure_channel(
            self.settings.serving_target, options=channel_options(self.settings)
        )
        self._stubs = {
            method: self._channel.unary_unary(
                method,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for method, request, response in (
                (PREDICT_METHOD, m.PredictRequest, m.PredictResponse),
                (GET_MODEL_STATUS_METHOD, m.GetModelStatusRequest, m.GetModelStatusResponse),
                (
                    GET_MODEL_METADATA_METHOD,
                    m.GetModelMetadataRequest,
                    m.GetModelMetadataResponse,
                ),
            )
        }

    async def close(self) -> None:
        """Close the channel, letting in-flight calls finish for a moment."""
        if self._channel is not None:
            await self._channel.close(grace=1.0)
            self._channel = None

    def _fill_spec(self, spec: Any, model: str, selector: VersionSelector) -> None:
        spec.name = model
        if selector.version is not None:
            spec.version.value = selector.version
        elif selector.label:
            spec.version_label = selector.label

    async def _call(self, method: str, request, timeout, model, selector, info="") -> Any:
        """Make one call; time it, whatever its outcome, with one labelling rule.

        model: the name if the gateway serves it, else "unknown". version (Predict): the
        version that answered, else what was asked for (see MetricLabels.asked_version).
        Predict calls go to gateway_upstream_duration_seconds, status calls (and Predict
        calls given an `info` name, such as ReferenceStats) to
        gateway_upstream_info_duration_seconds. Shadow calls (`info="shadow"`) are timed by
        gateway/shadow.py in metrics of their own.
        """
        labels = self.metrics.labels
        started = time.perf_counter()
        code, response = "OK", None
        try:
            response = await self._stubs[method](request, timeout=timeout)
            return response
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            raise map_rpc_error(error, model, selector, self.settings) from None
        finally:
            elapsed = time.perf_counter() - started
            model_label = labels.model(model)
            if info == "shadow":
                pass
            elif method == PREDICT_METHOD and not info:
                if response is not None:
                    version = labels.served_version(model, response.model_spec.version.value)
                else:
                    version = labels.asked_version(model, selector.version, selector.label)
                self.metrics.upstream_duration.labels(model_label, version, code).observe(elapsed)
            else:
                name = info or method.rsplit("/", 1)[-1]
                self.metrics.upstream_info_duration.labels(model_label, name, code).observe(elapsed)

    async def predict(
        self,
        model: str,
        selector: VersionSelector,
        batch: np.ndarray,
        timeout: float,
        shadow: bool = False,
    ) -> PredictResult:
        """Run the signature on a float32 [N, 28, 28] batch; return the probabilities."""
        request = self.messages.PredictRequest()
        self._fill_spec(request.model_spec, model, selector)
        request.model_spec.signature_name = self.settings.signature_name
        fill_float_tensor(request.inputs[INPUT_NAME], batch)
        info = "shadow" if shadow else ""
        response = await self._call(PREDICT_METHOD, request, timeout, model, selector, info)
        version = int(response.model_spec.version.value)
        if OUTPUT_NAME not in response.outputs:
            raise UpstreamError(
                f"the model's {self.settings.signature_name} signature has no "
                f"{OUTPUT_NAME!r} output (got {sorted(response.outputs)})"
            )
        probabilities = to_numpy(response.outputs[OUTPUT_NAME])
        if probabilities.shape != (batch.shape[0], 10):
            raise UpstreamError(f"the model returned probabilities of shape {probabilities.shape}")
        return PredictResult(version=version, probabilities=probabilities)

    async def reference_stats(
        self, model: str, version: int, signature_name: str
    ) -> dict[str, np.ndarray]:
        """Predict on the version's no-input signature; every output as numpy."""
        selector = VersionSelector(version=version)
        request = self.messages.PredictRequest()
        self._fill_spec(request.model_spec, model, selector)
        request.model_spec.signature_name = signature_name
        response = await self._call(
            PREDICT_METHOD,
            request,
            self.settings.status_timeout_seconds,
            model,
            selector,
            "ReferenceStats",
        )
        return {name: to_numpy(tensor) for name, tensor in response.outputs.items()}

    async def model_status(self, model: str, selector: VersionSelector | None = None):
        """GetModelStatus: every version TF Serving knows for `model`, with its state."""
        selector = selector or VersionSelector()
        request = self.messages.GetModelStatusRequest()
        self._fill_spec(request.model_spec, model, selector)
        response = await self._call(
            GET_MODEL_STATUS_METHOD,
            request,
            self.settings.status_timeout_seconds,
            model,
            selector,
        )
        return [
            VersionStatus(
                version=int(row.version),
                state=self.messages.state_name(row.state),
                error_code=int(row.status.error_code),
                error_message=row.status.error_message,
            )
            for row in response.model_version_status
        ]

    async def model_signatures(self, model: str, selector: VersionSelector | None = None):
        """GetModelMetadata's signature_def, as {name: {inputs, outputs, method_name}}."""
        selector = selector or VersionSelector()
        request = self.messages.GetModelMetadataRequest()
        self._fill_spec(request.model_spec, model, selector)
        request.metadata_field.append("signature_def")
        response = await self._call(
            GET_MODEL_METADATA_METHOD,
            request,
            self.settings.status_timeout_seconds,
            model,
            selector,
        )
        if "signature_def" not in response.metadata:
            return int(response.model_spec.version.value), {}
        signature_map = self.messages.SignatureDefMap.FromString(
            response.metadata["signature_def"].value
        )
        signatures = {}
        for name, signature in sorted(signature_map.signature_def.items()):
            if name.startswith("__"):  # __saved_model_init_op: not a serving signature
                continue
            signatures[name] = {
                "method_name": signature.method_name,
                "inputs": {k: self._describe_tensor(v) for k, v in signature.inputs.items()},
                "outputs": {k: self._describe_tensor(v) for k, v in signature.outputs.items()},
            }
        return int(response.model_spec.version.value), signatures

    def _describe_tensor(self, info: Any) -> dict[str, Any]:
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = [int(dim.size) for dim in info.tensor_shape.dim]
        return {"dtype": self.messages.dtype_name(info.dtype), "shape": shape}
