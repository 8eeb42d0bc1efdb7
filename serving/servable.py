"""One loaded version of a model: its SavedModel, signatures, input checks and TF call.

Knows nothing of gRPC or HTTP. A version is loaded as TF Serving loads it: the serving
MetaGraph is imported into its own TensorFlow Session, variables are restored by the
SavedModel's restore op and the init op runs; each signature is then one Session callable
(numpy in, numpy out) that feeds and fetches the SignatureDef's tensor names. Loading the
same way means an export that only works when reloaded eagerly (TF2 object graph) fails
here as it fails in tensorflow_model_server, and the callable costs a fraction of an eager
function call.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving import tensors
from serving.errors import (
    DataLossError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    from_tensorflow_error,
)

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving refuses warmup files longer than this (saved_model_warmup_util.cc).
MAX_WARMUP_RECORDS = 1000
PREDICT_METHODS = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)


@dataclasses.dataclass(frozen=True)
class Signature:
    """A callable signature: its SignatureDef, Session callable and batching facts."""

    name: str
    definition: meta_graph_pb2.SignatureDef
    # Session callable: input arrays in `input_order`, outputs in `output_order`.
    runner: Callable[..., list[np.ndarray]] | None
    input_order: tuple[str, ...]
    output_order: tuple[str, ...]
    input_dims: dict[str, list[int] | None]
    # Every input and output has an unknown leading dimension: requests can be merged.
    batchable: bool
    # alias -> (numpy dtype, rank or None, [(axis, fixed size)], feed position): checked on
    # every request, so computed once.
    input_checks: dict[str, tuple[np.dtype, int | None, list[tuple[int, int]], int]]


class Servable:
    """A model version ready to serve: `run` is thread-safe and may be called concurrently."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signature_defs: dict[str, meta_graph_pb2.SignatureDef],
        session,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self._session = session  # owns the graph and variables the runners use
        self.signatures: dict[str, Signature] = {}
        for key, definition in signature_defs.items():
            # Feeds, fetches and input checks all follow this one order of the aliases.
            input_order = tuple(sorted(definition.inputs))
            output_order = tuple(sorted(definition.outputs))
            input_dims = {
                a: tensors.shape_dims(i.tensor_shape) for a, i in definition.inputs.items()
            }
            output_dims = [tensors.shape_dims(o.tensor_shape) for o in definition.outputs.values()]
            batchable = all(
                dims is not None and len(dims) >= 1 and dims[0] == -1
                for dims in [*input_dims.values(), *output_dims]
            )
            checks = {}
            for position, alias in enumerate(input_order):
                dims = input_dims[alias]
                fixed = [(axis, size) for axis, size in enumerate(dims or []) if size != -1]
                checks[alias] = (
                    tensors.numpy_dtype(definition.inputs[alias].dtype)
                    if definition.inputs[alias].dtype in tensors.SUPPORTED_DTYPES
                    else None,
                    None if dims is None else len(dims),
                    fixed,
                    position,
                )
            self.signatures[key] = Signature(
                key,
                definition,
                _session_callable(session, definition, input_order, output_order)
                if definition.method_name in PREDICT_METHODS
                else None,
                input_order,
                output_order,
                input_dims,
                batchable,
                checks,
            )

    def signature(self, name: str) -> Signature:
        """The signature `name` ("" = serving_default); FailedPrecondition if unknown."""
        key = name or "serving_default"
        signature = self.signatures.get(key)
        if signature is None:
            raise FailedPreconditionError(f'Serving signature key "{key}" not found.')
        if signature.definition.method_name not in PREDICT_METHODS or signature.runner is None:
            raise InternalError(
                "Expected prediction signature method_name to be one of {"
                + ", ".join(PREDICT_METHODS)
                + "}. Was: "
                + signature.definition.method_name
            )
        return signature

    def check_inputs(self, signature: Signature, inputs: dict[str, np.ndarray]) -> None:
        """Check aliases, dtypes and shapes against the signature, as TF Serving does."""
        checks = signature.input_checks
        if len(inputs) != len(checks):
            sent, wanted = set(inputs), set(checks)
            raise InvalidArgumentError(
                f"input size does not match signature: {len(inputs)}!={len(checks)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        for alias, array in inputs.items():
            check = checks.get(alias)
            if check is None:
                raise InvalidArgumentError(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to "
                    f"be in the set {{{','.join(sorted(checks))}}}."
                )
            dtype, rank, fixed, position = check
            if array.dtype != dtype:
                self._wrong_dtype(signature, alias, array, position)
            if rank is None:
                continue
            shape = array.shape
            if len(shape) != rank or any(shape[axis] != size for axis, size in fixed):
                dims = signature.input_dims[alias] or []
                wanted_shape = "[" + ",".join("?" if d == -1 else str(d) for d in dims) + "]"
                raise InvalidArgumentError(
                    f"input tensor {alias} has shape [{','.join(map(str, shape))}], "
                    f"but the signature expects {wanted_shape}"
                )

    @staticmethod
    def _wrong_dtype(signature: Signature, alias: str, array: np.ndarray, position: int):
        expected = tensors.dtype_name(signature.definition.inputs[alias].dtype)
        enum = tensors.dtype_enum(array.dtype)
        got = tensors.dtype_name(enum) if enum is not None else str(array.dtype)
        raise InvalidArgumentError(
            f"Expects arg[{position}] to be {expected} but {got} is provided (input {alias})"
        )

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature in the version's Session; every output, as numpy arrays."""
        try:
            values = signature.runner(*[inputs[alias] for alias in signature.input_order])
        except ServingError:
            raise
        except Exception as error:  # TensorFlow raises its own OpError family
            raise from_tensorflow_error(error) from None
        return dict(zip(signature.output_order, values, strict=True))


def read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    """The serving MetaGraphDef of saved_model.pb, read as TF Serving reads it."""
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise NotFoundError(
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
        )
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except DecodeError:
        raise DataLossError(f"Can't parse {pb} as binary proto") from None
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise NotFoundError(
        f"Could not find meta graph def matching supplied tags: {{ serve }}. in {path}"
    )


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load a SavedModel version; a ServingError (NOT_FOUND, DATA_LOSS, ...) when it cannot."""
    import tensorflow as tf  # deferred: importing this module stays cheap
    from tensorflow.python.util import deprecation

    started = time.monotonic()
    signature_defs = dict(read_meta_graph(path).signature_def)
    # The thread counts `python -m serving` set from its flags apply to sessions too.
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
    )
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default(), deprecation.silence():
            # Restores the variables and runs the init op, as TF Serving's LoadSavedModel.
            tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        servable = Servable(name, version, path, signature_defs, session)
    except Exception as error:  # corrupt variables, missing files, bad graph
        session.close()
        raise from_tensorflow_error(error) from None
    log.info(
        "loaded %s version %d from %s in %.2fs", name, version, path, time.monotonic() - started
    )
    return servable


def _session_callable(
    session,
    definition: meta_graph_pb2.SignatureDef,
    input_order: tuple[str, ...],
    output_order: tuple[str, ...],
) -> Callable[..., list[np.ndarray]]:
    """A callable that feeds the signature's inputs and fetches its outputs, in these orders.

    The graph runs in the calling thread (`inter_op_thread_pool = -1`) rather than being
    handed to TensorFlow's inter-op pool: for a small model the two thread hand-offs cost
    several times the computation itself (a batch of 1: ~23 us instead of ~150 us here).
    Kernels still use the intra-op pool for their own parallelism. The callable is built
    from CallableOptions, the only way to give it run options once rather than per call
    (TensorFlow-internal, present in the pinned 2.21).
    """
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions(
        feed=[definition.inputs[alias].name for alias in input_order],
        fetch=[definition.outputs[alias].name for alias in output_order],
    )
    options.run_options.inter_op_thread_pool = -1
    return session._make_callable_from_options(options)


def read_warmup_requests(path: Path) -> list:
    """PredictRequests recorded in assets.extra/tf_serving_warmup_requests (may be empty)."""
    warmup = path / WARMUP_FILE
    if not warmup.is_file():
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    try:
        for record in tf.data.TFRecordDataset(str(warmup)):
            if len(requests) >= MAX_WARMUP_RECORDS:
                raise InvalidArgumentError(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                    f"at {warmup}"
                )
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log_entry.WhichOneof("log_type") != "predict_log":
                raise InvalidArgumentError(
                    f"Unsupported log_type for warmup: {log_entry.WhichOneof('log_type')}"
                )
            requests.append(log_entry.predict_log.request)
    except ServingError:
        raise
    except Exception as error:  # truncated or corrupt TFRecord file
        raise DataLossError(f"Failed to read warmup requests from {warmup}: {error}") from None
    return requests


def run_warmup(servable: Servable) -> int:
    """Replay the version's warmup requests; the first failure fails the load. Returns count."""
    requests = read_warmup_requests(servable.path)
    for request in requests:
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {a: tensors.make_ndarray(t, a) for a, t in request.inputs.items()}
        servable.check_inputs(signature, inputs)
        servable.run(signature, inputs)
    if requests:
        log.info(
            "replayed %d warmup requests for %s version %d",
            len(requests),
            servable.name,
            servable.version,
        )
    return len(requests)
