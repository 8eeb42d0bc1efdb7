"""The peer for `make bench-peers`: KServe's Python ModelServer serving the mnist SavedModel.

The few lines a KServe user writes, as KServe's docs show them: a `kserve.Model` that loads
the SavedModel and calls its `serving_default` signature, answering TF Serving's v1 format
(`/v1/models/mnist:predict`) and the Open Inference Protocol (`/v2/models/mnist/infer`).
Runs in its own virtual environment (.cache/kserve): kserve needs a newer starlette than the
project's pin. Not part of the project's code: it is the thing being compared against.

    .cache/kserve/bin/python benchmarks/kserve_mnist.py --model_name mnist \\
        --model_dir model_repository/mnist/1 --http_port 9601 --grpc_port 9602
"""

from __future__ import annotations

import argparse
import uuid

import kserve
import numpy as np
import tensorflow as tf
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse


class MnistModel(kserve.Model):
    """serving_default of the SavedModel: images [N,28,28] -> probabilities, classes."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.signature = None
        self.load()

    def load(self) -> bool:
        self.signature = tf.saved_model.load(self.model_dir).signatures["serving_default"]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            images = payload.inputs[0].as_numpy().astype(np.float32)
            outputs = self.signature(images=tf.constant(images))
            return InferResponse(
                model_name=self.name,
                infer_outputs=[
                    InferOutput(
                        name=name,
                        datatype="FP32" if name == "probabilities" else "INT64",
                        shape=list(outputs[name].shape),
                        data=outputs[name].numpy().flatten().tolist(),
                    )
                    for name in ("classes", "probabilities")
                ],
                response_id=payload.id or str(uuid.uuid4()),
            )
        images = tf.constant(np.asarray(payload["instances"], dtype=np.float32))
        outputs = self.signature(images=images)
        probabilities = outputs["probabilities"].numpy().tolist()
        classes = outputs["classes"].numpy().tolist()
        return {
            "predictions": [
                {"classes": c, "probabilities": p}
                for c, p in zip(classes, probabilities, strict=True)
            ]
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True, help="a SavedModel version directory")
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([MnistModel(args.model_name, args.model_dir)])
