"""The seed tutorials' deployment pattern, kept only as the gateway benchmark's baseline.

A Flask app that loads the SavedModel with Keras and calls `model.predict` for each
request, served by Werkzeug's threaded server. Not part of the product.

    python benchmarks/flask_baseline.py --model-dir model_repository/mnist/1 --port 5000
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np


def create_app(model_dir: str):
    import keras
    from flask import Flask, jsonify, request
    from PIL import Image

    # Keras 3 loads a TF SavedModel for inference through TFSMLayer.
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.TFSMLayer(model_dir, call_endpoint="serving_default"),
        ]
    )
    app = Flask(__name__)

    def answer(images: np.ndarray):
        outputs = model.predict(images, verbose=0)
        probabilities = outputs["probabilities"]
        return jsonify(
            predictions=[
                {"class": int(row.argmax()), "probabilities": row.tolist()} for row in probabilities
            ]
        )

    @app.post("/predict")
    def predict():
        instances = np.asarray(request.get_json()["instances"], dtype=np.float32)
        return answer(instances.reshape(-1, 28, 28))

    @app.post("/predict/image")
    def predict_image():
        image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((28, 28))
        return answer(np.asarray(image, dtype=np.float32)[np.newaxis] / 255.0)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    create_app(args.model_dir).run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
