"""A gRPC client for TF Serving's PredictionService.Predict that reports every call.

The load test's gRPC user calls the model server directly with it, so one run shows the
latency of the model server alone next to the latency through the gateway.

Under Locust, `grpc.experimental.gevent.init_gevent()` must run before the first channel is
made (the locustfile does it in its `init` listener); then the blocking stub yields to the
gevent loop instead of stalling every other simulated user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
DT_FLOAT = 1
REQUEST_NAME = "PredictionService/Predict"


def import_messages() -> SimpleNamespace:
    """Return the PredictRequest and PredictResponse classes and where they came from.

    The gateway's compiled proto subset comes first: it needs no TensorFlow, whereas
    `tensorflow_serving.apis` imports all of TensorFlow (15 s and over 1 GB here).
    """
    try:
        from gateway.tfs_protos import load_messages

        messages = load_messages()
        return SimpleNamespace(
            source="gateway.tfs_protos",
            PredictRequest=messages.PredictRequest,
            PredictResponse=messages.PredictResponse,
        )
    except (ImportError, RuntimeError) as gateway_error:  # not built: `make protos`
        try:
            from tensorflow_serving.apis import predict_pb2
        except ImportError as error:
            raise ImportError(
                f"no TF Serving protos: {gateway_error} (run `make protos`), and "
                f"tensorflow-serving-api is not installed either ({error})"
            ) from error
        return SimpleNamespace(
            source="tensorflow_serving.apis",
            PredictRequest=predict_pb2.PredictRequest,
            PredictResponse=predict_pb2.PredictResponse,
        )


class PredictClient:
    """Send `serving_default` Predict calls and report each one to `on_request`.

    `on_request` receives Locust's request-event keywords (`request_type`, `name`,
    `response_time` in ms, `response_length`, `exception`, `context`, `response`).
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        on_request: Callable[..., Any],
        timeout_seconds: float = 10.0,
        signature_name: str = "serving_default",
    ) -> None:
        self.messages = import_messages()
        self.model_name = model_name
        self.signature_name = signature_name
        self.timeout_seconds = timeout_seconds
        self.on_request = on_request
        # round_robin: behind `dns:///<headless Service>` every call goes to the next TF
        # Serving pod, as the gateway's do, instead of all of them to the first pod resolved.
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.lb_policy_name", "round_robin")]
        )
        # A generic unary call with the method path: the gateway's subset has messages only,
        # no generated stubs, and the path is all a stub would add.
        self._predict = self._channel.unary_unary(
            PREDICT_METHOD,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=self.messages.PredictResponse.FromString,
        )

    def make_request(self, images: np.ndarray) -> Any:
        """Build a PredictRequest for uint8 images [N, 28, 28], scaled to [0, 1] float32."""
        batch = np.asarray(images, dtype=np.float32) / 255.0
        request = self.messages.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        tensor = request.inputs["images"]
        tensor.dtype = DT_FLOAT
        for size in batch.shape:
            tensor.tensor_shape.dim.add().size = size
        tensor.tensor_content = batch.astype("<f4").tobytes()
        return request

    def predict(self, request: Any, name: str = REQUEST_NAME) -> list[int] | None:
        """Call Predict; report the call; return the predicted classes, or None if it failed."""
        expected = request.inputs["images"].tensor_shape.dim[0].size
        start = time.perf_counter()
        response = None
        exception: Exception | None = None
        classes: list[int] | None = None
        try:
            response = self._predict(request, timeout=self.timeout_seconds)
            classes = read_classes(response)
            if len(classes) != expected:
                raise ValueError(f"expected {expected} classes, got {len(classes)}")
        except (grpc.RpcError, ValueError, KeyError) as error:
            exception = error
            classes = None
        self.on_request(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=response.ByteSize() if response is not None else 0,
            exception=exception,
            context={},
            response=response,
        )
        return classes

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


def read_classes(response: Any) -> list[int]:
    """Read the int64 `classes` output, whether sent as `int64_val` or `tensor_content`."""
    if "classes" not in response.outputs:
        raise KeyError(f"response has no 'classes' output (has {sorted(response.outputs)})")
    tensor = response.outputs["classes"]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype="<i8").astype(int).tolist()
    return [int(value) for value in tensor.int64_val]
