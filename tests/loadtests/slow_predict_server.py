"""A PredictionService that answers every Predict after a fixed delay (a test double).

It exists to show whether the load test's gRPC user blocks gevent's loop: against a slow
server, N users overlap their calls only if a blocking call lets the other users run.
Run: `python -m tests.loadtests.slow_predict_server PORT DELAY_SECONDS`.
"""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc

from gateway.tfs_protos import load_messages

DT_INT64 = 9


def serve(port: int, delay: float) -> None:
    messages = load_messages()

    def predict(raw: bytes, _context: grpc.ServicerContext) -> bytes:
        request = messages.PredictRequest.FromString(raw)
        count = request.inputs["images"].tensor_shape.dim[0].size
        time.sleep(delay)
        response = messages.PredictResponse()
        classes = response.outputs["classes"]
        classes.dtype = DT_INT64
        classes.tensor_shape.dim.add().size = count
        classes.int64_val.extend([0] * count)
        return response.SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(predict)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
