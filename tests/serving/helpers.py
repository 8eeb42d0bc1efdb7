"""Helpers for the serving tests: publish version copies, build requests, read metrics."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

MODEL_NAME = "mnist"


def publish_copy(source_version: Path, model_dir: Path, version: int) -> Path:
    """Publish a copy of a SavedModel version as `version`, atomically (temp dir + rename)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    temp = model_dir / f".tmp-copy-{version}"
    shutil.copytree(source_version, temp)
    target = model_dir / str(version)
    temp.rename(target)
    return target


def write_model_config(
    path: Path,
    base_path: Path,
    num_versions: int = 2,
    labels: dict[str, int] | None = None,
    name: str = MODEL_NAME,
) -> Path:
    """Write a text-format ModelServerConfig for one model with a latest-N policy."""
    label_text = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in (labels or {}).items()
    )
    path.write_text(
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ latest {{ num_versions: {num_versions} }} }}\n"
        f"{label_text}"
        "  }\n"
        "}\n"
    )
    return path


def scaled_images(images: np.ndarray, count: int) -> np.ndarray:
    """The first `count` uint8 images as float32 in [0, 1], shape [count, 28, 28]."""
    return (images[:count].astype(np.float32) / 255.0).reshape(count, 28, 28)


def predict_request(
    images: np.ndarray,
    signature_name: str = "",
    version: int | None = None,
    label: str | None = None,
    name: str = MODEL_NAME,
    alias: str = "images",
):
    """A PredictRequest built with the official stubs and tf.make_tensor_proto."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature_name:
        request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(images))
    return request


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    pattern = re.compile(r"^(?P<name>[^\s{]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


def build_spin_model(path: Path) -> None:
    """A SavedModel whose `serving_default` runs `iterations` 128x128 matmuls.

    Lets a test keep requests in flight (drain, timeouts) for as long as it needs.
    """
    import tensorflow as tf

    class Spin(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="iterations")])
        def serving_default(self, iterations):
            weights = tf.fill([128, 128], 1.0 / 128)

            def body(i, acc):
                return i + 1, tf.matmul(acc, weights)

            done, acc = tf.while_loop(
                lambda i, acc: i < iterations, body, [tf.constant(0), tf.eye(128)]
            )
            # Both are outputs: Grappler would prune the products if the result hid them
            # behind `* 0.0`, and the model would stop being slow.
            return {"done": tf.cast(done, tf.float32), "total": tf.reduce_sum(acc)}

    module = Spin()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serving_default})


class FakeLoader:
    """A loader for in-process manager and core tests: no TensorFlow, no SavedModel.

    A version directory loads when it holds a file named `model`; a `broken` file makes it
    fail with NOT_FOUND (as a half-copied version does). Every load is recorded.
    """

    def __init__(self) -> None:
        self.loaded: list[tuple[str, int]] = []

    def __call__(self, name: str, version: int, path: Path):
        from serving.errors import NotFoundError
        from serving.servable import Servable

        if (path / "broken").exists() or not (path / "model").exists():
            raise NotFoundError(f"Could not find SavedModel .pb or .pbtxt at {path}")
        self.loaded.append((name, version))
        return Servable(name, version, path, {}, session=None)


def fake_version(model_dir: Path, version: int, broken: bool = False) -> Path:
    """Publish a version directory the FakeLoader loads (or fails on, when `broken`)."""
    path = model_dir / str(version)
    path.mkdir(parents=True, exist_ok=True)
    (path / ("broken" if broken else "model")).write_text(str(version))
    return path


def model_config(*models: tuple[str, Path], num_versions: int = 1, **labels: int):
    """ModelServerConfig: each (name, base path) with a latest-N policy; labels on the first."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for index, (name, base_path) in enumerate(models):
        model = config.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
        model.model_version_policy.latest.num_versions = num_versions
        if index == 0:
            for label, version in labels.items():
                model.version_labels[label] = version
    return config


def server_config_for(models, batching=None, metrics_path=None, **flags):
    """A ServerConfig as `python -m serving` would build it, for in-process cores."""
    from serving.flags import ServerFlags
    from serving.server_config import ServerConfig

    flags.setdefault("model_config_file", "/unused/models.config")
    return ServerConfig(ServerFlags(**flags), models, batching, metrics_path)


# -- Open Inference Protocol (v2) -------------------------------------------------------------

# What v2 model metadata says of the trained mnist (its serving_default signature).
MNIST_V2_METADATA = {
    "name": "mnist",
    "versions": ["1"],
    "platform": "tensorflow_savedmodel",
    "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28]}],
    "outputs": [
        {"name": "classes", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ],
}

# tfs_corpus identity signature -> (v2 datatype, sample values)
DATATYPE_SAMPLES = {
    "float": ("FP32", [1.5, -2.25, 3.0, 0.125]),  # exact in float32: JSON gives doubles
    "double": ("FP64", [1.5, -2.25, 1e300, 0.1]),
    "half": ("FP16", [1.5, -2.25, 3.0, 0.5]),
    "int8": ("INT8", [-128, 127, 0, 5]),
    "int16": ("INT16", [-32768, 32767, 0, 5]),
    "int32": ("INT32", [-(2**31), 2**31 - 1, 0, 5]),
    "int64": ("INT64", [-(2**63), 2**63 - 1, 0, 5]),
    "uint8": ("UINT8", [0, 255, 1, 5]),
    "uint16": ("UINT16", [0, 65535, 1, 5]),
    "uint32": ("UINT32", [0, 2**32 - 1, 1, 5]),
    "uint64": ("UINT64", [0, 2**64 - 1, 1, 5]),
    "bool": ("BOOL", [True, False, True, True]),
    "string": ("BYTES", ["héllo", "", "a b", "✓"]),
}
