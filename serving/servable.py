"""One loaded version of a model: its SavedModel, signatures, input checks, TF call and unload.

Knows nothing of gRPC or HTTP. A version is loaded as TF Serving loads it: the serving
MetaGraph is imported into its own TensorFlow Session, variables are restored by the
SavedModel's restore op and the init op runs; each signature is then one Session callable
(numpy in, numpy out) that feeds and fetches the SignatureDef's tensor names. Loading the
same way means an export that only works when reloaded eagerly (TF2 object graph) fails
here as it fails in tensorflow_model_server, and the callable costs a fraction of an eager
function call.

Unloading frees the version: requests that already hold it finish first (`acquire` /
`release` count them), then its runners are dropped and its Session is closed, which frees
the graph and the variables.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving import tensor_proto
from serving.errors import (
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnavailableError,
    from_tensorflow_error,
)

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving refuses warmup files longer than this (saved_model_warmup_util.cc).
MAX_WARMUP_RECORDS = 1000
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A callable signature: its SignatureDef, Session callable and batching facts."""

    name: str
    definition: meta_graph_pb2.SignatureDef
    # Session callable: input arrays in `input_order`, outputs in `output_order`.
    runner: Callable[..., list[np.ndarray]]
    input_order: tuple[str, ...]
    output_order: tuple[str, ...]
    # alias -> numpy dtype (None: a dtype the embedded server cannot feed)
    input_dtypes: dict[str, np.dtype | None]
    # SignatureDef.defaults, decoded: used for inputs a request leaves out.
    defaults: dict[str, np.ndarray]
    # Every input and output has an unknown leading dimension: requests can be merged.
    batchable: bool

    @property
    def method_name(self) -> str:
        return self.definition.method_name


class Servable:
    """A model version ready to serve: `run` is thread-safe and may be called concurrently."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signature_defs: dict[str, meta_graph_pb2.SignatureDef],
        session,
        generation: int = 0,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        # Distinguishes two loads of the same version (a rewritten directory): batch queues
        # and other per-version state are keyed by (name, version, generation).
        self.generation = generation
        self.signature_defs = signature_defs
        self._session = session  # owns the graph and variables the runners use
        self.signatures: dict[str, Signature] = {
            key: _build_signature(key, definition, session)
            for key, definition in signature_defs.items()
        }
        self._lock = threading.Lock()
        self._inflight = 0  # requests holding the version (queued or running)
        self._calls = 0  # TensorFlow calls running (a cancelled request's may still run)
        self._closing = False
        self._drained = threading.Event()

    @property
    def key(self) -> tuple[str, int, int]:
        """(name, version, generation): unique for the life of the process."""
        return (self.name, self.version, self.generation)

    # -- lifecycle -------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Count one request in; False once unloading has begun (the caller re-resolves)."""
        with self._lock:
            if self._closing:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        """Count one request out (after `acquire` returned True)."""
        with self._lock:
            self._inflight -= 1
            self._signal_if_drained()

    def _signal_if_drained(self) -> None:
        if self._closing and self._inflight == 0 and self._calls == 0:
            self._drained.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    def drain(self, timeout: float | None = None) -> bool:
        """Refuse new requests, wait for those in flight and for running TensorFlow calls;
        True when none remain."""
        with self._lock:
            self._closing = True
            self._signal_if_drained()
        return self._drained.wait(timeout)

    def close(self) -> None:
        """Free the version: drop its runners and close its Session (graph, variables)."""
        self._closing = True
        self.signatures = {}
        session, self._session = self._session, None
        if session is not None:
            session.close()

    @property
    def closed(self) -> bool:
        return self._session is None

    # -- requests --------------------------------------------------------------------------

    def signature(self, name: str) -> Signature:
        """The signature `name` ("" = serving_default); FailedPrecondition if unknown."""
        key = name or DEFAULT_SIGNATURE
        signature = self.signatures.get(key)
        if signature is None:
            if self._session is None:
                raise UnavailableError(f"{self.name} version {self.version} was unloaded")
            raise FailedPreconditionError(f'Serving signature key "{key}" not found.')
        return signature

    @staticmethod
    def complete_inputs(
        signature: Signature, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The inputs to feed, as TF Serving's VerifyRequestInputsSize and GetInputValues
        check them: every alias known, every missing one given by SignatureDef.defaults."""
        definition = signature.definition
        wanted = definition.inputs
        if len(inputs) > len(wanted) or (len(inputs) < len(wanted) and not signature.defaults):
            sent = set(inputs)
            names = set(wanted)
            raise InvalidArgumentError(
                f"input size does not match signature: {len(inputs)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(names))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - names))}}}. "
                f"Missing but required: {{{','.join(sorted(names - sent))}}}."
            )
        if len(inputs) == len(wanted) and all(alias in wanted for alias in inputs):
            return dict(inputs)  # the common case: no defaults needed
        feed: dict[str, np.ndarray] = {}
        for alias in signature.input_order:
            if alias in inputs:
                feed[alias] = inputs[alias]
            elif alias in signature.defaults:
                feed[alias] = signature.defaults[alias]
            else:
                raise InvalidArgumentError(
                    f"Signature input alias: {alias}(feed name: {wanted[alias].name}) not "
                    "found in request and no default value provided. Inputs expected to be "
                    f"in the request {{{','.join(sorted(inputs))}}}, or default input alias "
                    f"set: {','.join(sorted(signature.defaults))}"
                )
        used = [alias for alias in inputs if alias in wanted]
        if inputs and len(used) != len(inputs):
            raise InvalidArgumentError(
                f"Inputs contains invalid name. Used request inputs: {','.join(sorted(used))}"
                f", request input: {','.join(sorted(inputs))}"
            )
        return feed

    @staticmethod
    def check_dtypes(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
        """Refuse an input whose dtype the signature does not take, with TensorFlow's words.

        TF Serving hands the tensors to Session::Run, which refuses them this way; checking
        first keeps a wrong dtype from reaching a batch that other requests share.
        """
        dtypes = signature.input_dtypes
        for position, alias in enumerate(signature.input_order):
            array = inputs[alias]
            expected = dtypes[alias]
            if array.dtype == expected or (
                expected == np.dtype(object) and array.dtype.kind in "OS"
            ):
                continue
            wanted = tensor_proto.dtype_name(signature.definition.inputs[alias].dtype)
            enum = tensor_proto.dtype_enum(array.dtype)
            got = tensor_proto.dtype_name(enum) if enum is not None else str(array.dtype)
            raise InvalidArgumentError(
                f"Expects arg[{position}] to be {wanted} but {got} is provided"
            )

    def run(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the signature in the version's Session; every output, as numpy arrays."""
        with self._lock:
            self._calls += 1
        try:
            values = signature.runner(*[inputs[alias] for alias in signature.input_order])
        except ServingError:
            raise
        except Exception as error:  # TensorFlow raises its own OpError family
            raise from_tensorflow_error(error) from None
        finally:
            with self._lock:
                self._calls -= 1
                self._signal_if_drained()
        return {
            alias: value if type(value) is np.ndarray else _as_array(value)
            for alias, value in zip(signature.output_order, values, strict=True)
        }


def _as_array(value) -> np.ndarray:
    """A Session callable returns a rank-0 string output as plain bytes: make it an array."""
    if isinstance(value, bytes):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    return np.asarray(value)


def _build_signature(key: str, definition: meta_graph_pb2.SignatureDef, session) -> Signature:
    # Feeds, fetches and dtype checks all follow this one order of the aliases.
    input_order = tuple(sorted(definition.inputs))
    output_order = tuple(sorted(definition.outputs))
    dims = [tensor_proto.shape_dims(i.tensor_shape) for i in definition.inputs.values()]
    dims += [tensor_proto.shape_dims(o.tensor_shape) for o in definition.outputs.values()]
    batchable = bool(dims) and all(d is not None and len(d) >= 1 and d[0] == -1 for d in dims)
    input_dtypes = {
        alias: tensor_proto.numpy_dtype(info.dtype)
        if info.dtype in tensor_proto.SUPPORTED_DTYPES
        else None
        for alias, info in definition.inputs.items()
    }
    defaults = {}
    for alias, proto in definition.defaults.items():
        try:
            defaults[alias] = tensor_proto.make_ndarray(proto, alias)
        except ServingError:
            log.warning("signature %s: default of %s cannot be decoded; ignored", key, alias)
    try:
        runner = _session_callable(session, definition, input_order, output_order)
    except Exception as error:  # e.g. TF2's __saved_model_init_op: outputs that are ops
        # TF Serving lists such a signature and fails only when it is run; so do we.
        failure = from_tensorflow_error(error)

        def runner(*_inputs, failure=failure):
            raise type(failure)(failure.message)

    return Signature(
        key,
        definition,
        runner,
        input_order,
        output_order,
        input_dtypes,
        defaults,
        batchable,
    )


def read_meta_graph(path: Path, tags: frozenset[str]) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of saved_model.pb whose tags are `tags`, read as TF Serving reads it."""
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
        if set(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    raise NotFoundError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}."
        f" in {path}"
    )


def load_servable(
    name: str,
    version: int,
    path: Path,
    *,
    tags: frozenset[str] = frozenset({"serve"}),
    generation: int = 0,
) -> Servable:
    """Load a SavedModel version; a ServingError (NOT_FOUND, DATA_LOSS, ...) when it cannot."""
    import tensorflow as tf  # deferred: importing this module stays cheap
    from tensorflow.python.util import deprecation

    started = time.monotonic()
    signature_defs = dict(read_meta_graph(path, tags).signature_def)
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
            tf.compat.v1.saved_model.loader.load(session, sorted(tags), str(path))
        servable = Servable(name, version, path, signature_defs, session, generation)
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


def run_warmup(servable: Servable, iterations: int = 1) -> int:
    """Replay the version's warmup requests `iterations` times each; the first failure fails
    the load. Returns the number of requests replayed."""
    requests = read_warmup_requests(servable.path)
    for request in requests:
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {a: tensor_proto.make_ndarray(t, a) for a, t in request.inputs.items()}
        feed = servable.complete_inputs(signature, inputs)
        servable.check_dtypes(signature, feed)
        for _ in range(max(iterations, 1)):
            servable.run(signature, feed)
    if requests:
        log.info(
            "replayed %d warmup requests for %s version %d",
            len(requests),
            servable.name,
            servable.version,
        )
    return len(requests)
