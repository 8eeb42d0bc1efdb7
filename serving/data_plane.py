"""The data plane: Predict, Classify, Regress, metadata and status, protocol-free.

The protocol adapters (serving/protocol/) turn their wire format into the request objects
below and call `DataPlane`; all of them get the same validation, batching, errors and
metrics. Semantics are TF Serving's: predict_util.cc (inputs, defaults, output filter),
classifier.cc and regressor.cc (tf.Example signatures), server_core.cc (model specs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np
from google.protobuf import text_format

from serving import tensor_proto
from serving.batching import Batcher
from serving.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnknownError,
)
from serving.manager import ModelManager, VersionStatus
from serving.metrics import ServingMetrics
from serving.servable import DEFAULT_SIGNATURE, Servable, Signature

T = TypeVar("T")

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# Decoding up to this many bytes (converted element by element) costs the event loop well
# under a millisecond; bigger decodes go to the executor so other requests are not held up.
INLINE_DECODE_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model, version (or label) and signature a request is for."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclasses.dataclass(slots=True)
class PredictRequest:
    """One Predict call, whatever protocol carried it.

    `protocol` is the `entrypoint` label of TF Serving's request_latency metric: "GRPC" and
    "REST" for TF Serving's APIs (its own values), "V2_GRPC" and "V2_REST" for the Open
    Inference Protocol.
    """

    model: ModelSpec
    inputs: Mapping[str, np.ndarray]
    output_filter: Sequence[str] = ()
    protocol: str = "GRPC"
    # The adapter records TF Serving's request count and latency itself (REST does).
    adapter_counts: bool = False


@dataclasses.dataclass(slots=True)
class ExamplesRequest:
    """One Classify or Regress call: serialized tf.Examples (context already merged in)."""

    model: ModelSpec
    examples: Sequence[bytes]
    protocol: str = "GRPC"
    adapter_counts: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class PredictResult:
    """Outputs of one Predict, with the version and signature that produced them."""

    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True, slots=True)
class ClassifyResult:
    """Per example, per class: (label or None, score or None), as ClassificationResult."""

    model_name: str
    version: int
    signature_name: str
    classifications: list[list[tuple[bytes | None, float | None]]]


@dataclasses.dataclass(frozen=True, slots=True)
class RegressResult:
    """One value per example, as RegressionResult."""

    model_name: str
    version: int
    signature_name: str
    values: list[float]


def merge_example_context(context: bytes, examples: Sequence[bytes]) -> list[bytes]:
    """ExampleListWithContext as util.cc InputToSerializedExampleTensor feeds it: the
    context's bytes before each example's (protobuf merges concatenated messages)."""
    return [context + example for example in examples]


class _Accounting:
    """What every Predict, Classify and Regress records, however it ends: in-flight gauge,
    TF Serving's request count and latency, the per-version count; and the version it held
    is released. A plain context manager: the Predict hot path pays for no generator."""

    __slots__ = ("_api", "_plane", "_request", "_started", "servable")

    def __init__(self, plane: DataPlane, request: PredictRequest | ExamplesRequest, api: str):
        self._plane = plane
        self._request = request
        self._api = api
        self.servable: Servable | None = None

    def __enter__(self) -> _Accounting:
        self._plane.metrics.inflight_requests.add(self._request.model.name, amount=1)
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind, error, _traceback) -> None:
        if kind is None:
            status = "OK"
        elif isinstance(error, ServingError):
            status = error.code.name
        elif isinstance(error, asyncio.CancelledError):
            status = "CANCELLED"
        else:
            status = "UNKNOWN"
        servable = self.servable
        if servable is not None:
            servable.release()
        request = self._request
        self._plane.metrics.record_request(
            request.model.name,
            str(servable.version) if servable is not None else "",
            status,
            self._api,
            request.protocol,
            (time.perf_counter() - self._started) * 1e6,
            count=not request.adapter_counts,
        )


class DataPlane:
    """Serves every configured model: Predict, Classify, Regress, metadata, status."""

    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        metrics: ServingMetrics,
        batcher: Batcher | None = None,
        *,
        check_method_names: bool = False,
        max_request_tensor_bytes: int = 0,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._executor = executor
        self._batcher = batcher
        # --enable_signature_method_name_check (off by default, as in TF Serving).
        self._check_method_names = check_method_names
        self.max_request_tensor_bytes = max_request_tensor_bytes

    # -- helpers for the adapters --------------------------------------------------------

    async def offload(self, function: Callable[..., T], *args: Any, cost: int = 0) -> T:
        """Run `function(*args)` on the event loop when `cost` (bytes) is small, else in the
        executor: decoding a big request must not stall every other request."""
        if cost <= INLINE_DECODE_BYTES:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def decode_tensor_protos(self, protos: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """TensorProtos -> arrays, refused before allocating when they would take more than
        --max_request_tensor_bytes, and decoded off the event loop when large."""
        slow_bytes = tensor_proto.check_decoded_size(protos, self.max_request_tensor_bytes)
        return await self.offload(_decode_all, protos, cost=slow_bytes)

    def check_decoded_bytes(self, total: int) -> None:
        """Refuse a request (INVALID_ARGUMENT) whose inputs take more than the limit."""
        limit = self.max_request_tensor_bytes
        if limit and total > limit:
            raise InvalidArgumentError(
                f"Request input tensors would take {total} bytes once decoded, more than "
                f"this server's limit of {limit} bytes (--max_request_tensor_bytes)"
            )

    # -- Predict -------------------------------------------------------------------------

    async def predict(self, request: PredictRequest) -> PredictResult:
        """Run one Predict; records TF Serving's request count and latency metrics."""
        spec = request.model
        with _Accounting(self, request, "Predict") as account:
            servable = account.servable = self._acquire(spec)
            signature = servable.signature(spec.signature_name)
            self._verify_predict_method(signature)
            inputs = servable.complete_inputs(signature, request.inputs)
            aliases = self._output_aliases(signature, request.output_filter)
            servable.check_dtypes(signature, inputs)
            outputs = await self._run(servable, signature, inputs)
            if aliases is not None:
                outputs = {alias: outputs[alias] for alias in aliases}
            return PredictResult(spec.name, servable.version, signature.name, outputs)

    def _acquire(self, spec: ModelSpec) -> Servable:
        if not spec.name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        return self.manager.acquire(spec.name, spec.version, spec.label)

    def _verify_predict_method(self, signature: Signature) -> None:
        """predict_util.cc VerifySignature (only with --enable_signature_method_name_check)."""
        if self._check_method_names and signature.method_name not in (
            PREDICT_METHOD,
            CLASSIFY_METHOD,
            REGRESS_METHOD,
        ):
            raise InternalError(
                "Expected prediction signature method_name to be one of {"
                f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: "
                f"{signature.method_name}"
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
    ) -> asyncio.Future | Any:
        """The outputs of one run, batched or in the executor (an awaitable, not a coroutine
        of its own: one frame fewer per request)."""
        batcher = self._batcher
        if batcher is not None and signature.batchable and inputs:
            rows = None
            layout = []
            for alias, array in inputs.items():
                if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
                    break
                rows = array.shape[0]
                layout.append((alias, array.dtype.str, array.shape[1:]))
            else:
                key = (servable.key, signature.name, tuple(layout))
                queue = batcher.queue(
                    key, servable.name, lambda: self._runner(servable, signature, "Predict")
                )
                return queue.submit(inputs)
        return asyncio.get_running_loop().run_in_executor(
            self._executor, self._runner(servable, signature, "Predict"), inputs
        )

    def _runner(
        self, servable: Servable, signature: Signature, api: str
    ) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        """A function running `signature` on a batch and recording its runtime latency."""
        metrics = self.metrics
        name = servable.name

        def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            outputs = servable.run(signature, batch)
            metrics.runtime_latency.observe(
                name, api, "TF1", value=(time.perf_counter() - started) * 1e6
            )
            return outputs

        return run

    # -- Classify / Regress --------------------------------------------------------------

    async def classify(self, request: ExamplesRequest) -> ClassifyResult:
        """classifier.cc RunClassify: tf.Examples in, (label, score) per class out."""
        signature_name, version, outputs, count = await self._run_examples(request, "Classify")
        spec = request.model
        classes = outputs.get("classes")
        scores = outputs.get("scores")
        for tensor, what, dtype in (
            (classes, "classes", "DT_STRING"),
            (scores, "scores", "DT_FLOAT"),
        ):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise InvalidArgumentError(
                    "Expected Tensor shape: [batch_size num_classes] but got "
                    f"[{','.join(map(str, tensor.shape))}]"
                )
            got = tensor_proto.dtype_enum(tensor.dtype)
            if _dtype_enum_name(got) != dtype:
                raise InvalidArgumentError(
                    f"Expected {what} Tensor of {dtype}. Got: {_dtype_enum_name(got)}"
                )
            if tensor.shape[0] != count:
                raise InvalidArgumentError(
                    f"Expected {what} output batch size of {count}. Got: {tensor.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise InvalidArgumentError(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        num_classes = (classes if classes is not None else scores).shape[1]
        result = [
            [
                (
                    None if classes is None else bytes(classes[i, c]),
                    None if scores is None else float(scores[i, c]),
                )
                for c in range(num_classes)
            ]
            for i in range(count)
        ]
        return ClassifyResult(spec.name, version, signature_name, result)

    async def regress(self, request: ExamplesRequest) -> RegressResult:
        """regressor.cc RunRegress: tf.Examples in, one float per example out."""
        signature_name, version, outputs, count = await self._run_examples(request, "Regress")
        spec = request.model
        output = outputs["outputs"]
        if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
            raise InvalidArgumentError(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                f"but got [{','.join(map(str, output.shape))}]"
            )
        if output.shape[0] != count:
            raise InvalidArgumentError(
                f"Input batch size did not match output batch size: {count} vs. {output.shape[0]}"
            )
        if output.dtype != np.float32:
            name = _dtype_enum_name(tensor_proto.dtype_enum(output.dtype))
            raise InvalidArgumentError(f"Expected output Tensor of DT_FLOAT.  Got: {name}")
        values = [float(v) for v in output.reshape(-1)]
        return RegressResult(spec.name, version, signature_name, values)

    async def _run_examples(
        self, request: ExamplesRequest, api: str
    ) -> tuple[str, int, dict[str, np.ndarray], int]:
        """Resolve, check the signature as classifier.cc/regressor.cc do, feed the examples.

        Returns (signature name, version, {kind alias: output}, example count).
        """
        spec = request.model
        with _Accounting(self, request, api) as account:
            servable = account.servable = self._acquire(spec)
            key = spec.signature_name or DEFAULT_SIGNATURE
            signature = servable.signatures.get(key)
            if signature is None:
                raise InvalidArgumentError(f"No signature was found with the name: {key}")
            if api == "Classify":
                wanted = _classification_outputs(signature, self._check_method_names)
            else:
                wanted = _regression_outputs(signature, self._check_method_names)
            if not request.examples:
                raise InvalidArgumentError("Input is empty.")
            examples = np.empty(len(request.examples), dtype=object)
            examples[:] = list(request.examples)
            loop = asyncio.get_running_loop()
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._runner(servable, signature, api), {"inputs": examples}
                )
            except ServingError:
                raise
            except Exception as error:  # e.g. an output numpy cannot index: TF's UNKNOWN
                raise UnknownError(str(error)) from None
            picked = {kind: outputs[alias] for kind, alias in wanted.items()}
            # The response's model_spec keeps the request's signature_name (util.cc MakeModelSpec).
            return key, servable.version, picked, len(request.examples)

    # -- metadata and status -------------------------------------------------------------

    def signature_for(self, spec: ModelSpec) -> Signature:
        """The signature a REST request names (REST reports an unknown one as 400)."""
        servable = self._resolve(spec)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise InvalidArgumentError(
                f'Serving signature name: "{key}" not found in signature def'
            )
        return signature

    def _resolve(self, spec: ModelSpec) -> Servable:
        if not spec.name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        return self.manager.resolve(spec.name, spec.version, spec.label)

    def metadata(self, spec: ModelSpec) -> Servable:
        """The servable whose signature_def map GetModelMetadata returns."""
        return self._resolve(spec)

    def available_versions(self, name: str) -> list[int]:
        """The AVAILABLE versions of a model, ascending; NotFoundError for a model this
        server is not configured to serve."""
        if name not in self.manager.model_names():
            raise NotFoundError(f"Model {name} is not served by this server")
        return self.manager.available_versions(name)

    def version_labels(self, name: str) -> dict[str, int]:
        """The version labels of a model (label -> version)."""
        return self.manager.labels(name)

    def model_ready(self, spec: ModelSpec) -> bool:
        """True when the version the spec names (or its label, or the latest) is AVAILABLE;
        NotFoundError for a model this server is not configured to serve."""
        self.available_versions(spec.name)
        try:
            self.manager.resolve(spec.name, spec.version, spec.label)
        except ServingError:
            return False
        return True

    def all_models_available(self) -> bool:
        """True when every configured model has an AVAILABLE version (the server is ready,
        as the gRPC health service reports it)."""
        return self.manager.all_models_available()

    def status(self, spec: ModelSpec) -> list[VersionStatus]:
        """GetModelStatus: every known version, or the one a version / label names."""
        version = spec.version
        if spec.label is not None:
            version = self.manager.version_for_label(spec.name, spec.label)
        return self.manager.statuses(spec.name, version)


def _decode_all(protos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {alias: tensor_proto.make_ndarray(proto, alias) for alias, proto in protos.items()}


def _dtype_enum_name(enum: int | None) -> str:
    from tensorflow.core.framework import types_pb2

    return "DT_INVALID" if enum is None else types_pb2.DataType.Name(enum)


def _signature_text(signature: Signature) -> str:
    """SignatureDef::DebugString, which TF Serving's messages quote."""
    return text_format.MessageToString(signature.definition)


def _check_examples_signature(signature: Signature, kind: str, method: str, check: bool):
    """What classifier.cc and regressor.cc check first: the method name (when the flag
    asks) and a single input."""
    definition = signature.definition
    if check and definition.method_name != method:
        raise InvalidArgumentError(
            f"Expected {kind} signature method_name to be {method}. Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise InvalidArgumentError("Expected one input Tensor.")


def _classification_outputs(signature: Signature, check_method: bool) -> dict[str, str]:
    """classifier.cc PreProcessClassification: {"classes"/"scores": alias} to fetch."""
    definition = signature.definition
    _check_examples_signature(signature, "classification", CLASSIFY_METHOD, check_method)
    if len(definition.outputs) not in (1, 2):
        raise InvalidArgumentError(
            f"Expected one or two output Tensors, found {len(definition.outputs)}"
        )
    if "inputs" not in definition.inputs:
        raise InvalidArgumentError(
            f"No classification inputs found in SignatureDef: {_signature_text(signature)}"
        )
    wanted = {kind: kind for kind in ("classes", "scores") if kind in definition.outputs}
    if not wanted:
        raise InvalidArgumentError(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {_signature_text(signature)}'
        )
    return wanted


def _regression_outputs(signature: Signature, check_method: bool) -> dict[str, str]:
    """regressor.cc PreProcessRegression: {"outputs": alias} to fetch."""
    definition = signature.definition
    _check_examples_signature(signature, "regression", REGRESS_METHOD, check_method)
    if len(definition.outputs) != 1:
        raise InvalidArgumentError("Expected one output Tensor.")
    if "inputs" not in definition.inputs:
        raise InvalidArgumentError(
            f"No regression inputs found in SignatureDef: {_signature_text(signature)}"
        )
    if "outputs" not in definition.outputs:
        raise InvalidArgumentError(
            f"No regression outputs found in SignatureDef: {_signature_text(signature)}"
        )
    return {"outputs": "outputs"}
