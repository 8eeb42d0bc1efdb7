"""Export a trained model as a TF Serving version: SavedModel with both signatures, warmup
requests, metadata and the Keras model itself (for fine-tuning), published atomically by
renaming a temporary sibling directory."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data import IMAGE_SHAPE, scale_pixels
from trainer.errors import ExportError
from trainer.repository import METADATA_PATH, WARMUP_PATH, list_versions, next_version

if TYPE_CHECKING:
    import keras

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGES = "predict_images"
INPUT_KEY = "images"
# Batch sizes replayed at load time: one request each, so the first real calls of each
# common shape find the graph already traced and warmed.
WARMUP_BATCH_SIZES = (1, 8)
PUBLISH_ATTEMPTS = 5
TEMP_PREFIX = ".tmp-export-"
# An export takes seconds; a temporary directory this old was left by a killed trainer.
STALE_EXPORT_SECONDS = 3600.0
REFERENCE_PATH = "assets.extra/reference_stats.json"
# The trained Keras model itself, so `trainer finetune` starts from exactly these weights
# and layers (a SavedModel restores functions, not a Keras model one can freeze and fit).
KERAS_MODEL_PATH = "assets.extra/model.keras"


def build_export_archive(model: keras.Model, reference: dict[str, Any] | None = None) -> Any:
    """A keras ExportArchive of `model` whose two endpoints are the serving signatures.

    Keras' own exporter, not a tf.Module holding the model: TF Serving loads a SavedModel
    into a Session and restores variables by the MetaGraph's restore op, and a Keras 3 model
    saved as a tf.Module attribute restores into variables its serving function never reads
    ("Could not find variable ..." on every Predict; keras-team/keras#20096). The archive
    also tracks only the model's weights, not the optimizer's slots.

    With `reference` (trainer/reference_stats.py), a third, no-input signature
    `reference_stats` returns the version's reference statistics as constants.
    """
    import keras
    import tensorflow as tf

    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        return {
            "probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=1, output_type=tf.int64),
        }

    def predict_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # TF Serving's MNIST tutorial feeds flat 784-vectors and reads `scores`.
        return {"scores": model(tf.reshape(images, [-1, *IMAGE_SHAPE]), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_DEFAULT,
        serving_default,
        input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32, name=INPUT_KEY)],
    )
    archive.add_endpoint(
        PREDICT_IMAGES,
        predict_images,
        input_signature=[tf.TensorSpec([None, pixels], tf.float32, name=INPUT_KEY)],
    )
    if reference is not None:
        from trainer.reference_stats import SIGNATURE_NAME, signature_outputs

        constants = signature_outputs(reference)

        @tf.function(input_signature=[])
        def reference_stats() -> dict[str, tf.Tensor]:
            return {name: tf.constant(value) for name, value in constants.items()}

        reference_stats()  # traced once, as add_endpoint requires of a tf.function
        archive.add_endpoint(SIGNATURE_NAME, reference_stats)
    return archive


def write_warmup_requests(path: Path, model_name: str, images: np.ndarray) -> int:
    """Write TF Serving warmup records (PredictionLog) for both signatures; return the count."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    scaled = scale_pixels(images)
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature in (SERVING_DEFAULT, PREDICT_IMAGES):
            for batch_size in WARMUP_BATCH_SIZES:
                batch = scaled[:batch_size]
                if signature == PREDICT_IMAGES:
                    batch = batch.reshape(len(batch), -1)
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
                )
                request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch))
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
                writer.write(log.SerializeToString())
                count += 1
    return count


def remove_stale_exports(model_dir: Path, older_than: float = STALE_EXPORT_SECONDS) -> list[Path]:
    """Delete temporary export directories that a killed trainer left behind; return them.

    A trainer killed before its rename (SIGKILL, OOM, node loss) cannot clean up. Servers
    ignore such non-numeric directories, but they would pile up on the volume.
    """
    removed = []
    cutoff = time.time() - older_than
    for path in model_dir.glob(f"{TEMP_PREFIX}*"):
        if path.is_dir() and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def save_keras_model(model: keras.Model, path: Path) -> None:
    """Save `model`'s architecture and weights (no optimizer state) as a `.keras` file.

    A compiled model would also save its optimizer's slots (Adam: twice the weights), which
    fine-tuning never reads: the copy saved is rebuilt from the layers' config alone
    (`clone_model` and `model_from_json` carry the compile state, optimizer included), with
    the same weights. For the demo cnn that is 0.9 MB instead of 2.7 MB.
    """
    import keras

    plain = keras.Model.from_config(model.get_config())
    plain.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    plain.save(str(path))


def _write_metadata(version_dir: Path, metadata: dict[str, Any], version: int) -> None:
    (version_dir / METADATA_PATH).write_text(json.dumps({**metadata, "version": version}, indent=2))


def export_model(
    model: keras.Model,
    repository: Path,
    model_name: str,
    metadata: dict[str, Any],
    warmup_images: np.ndarray,
    before_publish: Callable[[Path], None] | None = None,
    reference: dict[str, Any] | None = None,
) -> Path:
    """Export `model` as the next version of `model_name` and return the version directory.

    Everything is written into a non-numeric sibling directory first; the final rename is
    atomic on one file system, so a server polling the repository sees either no new
    version or a complete one. The trained Keras model goes to assets.extra/model.keras
    (`KERAS_MODEL_PATH`), for `trainer finetune`. `before_publish` runs just before the
    rename (tests use it to interrupt an export). `reference`: reference statistics,
    served by the `reference_stats` signature and copied to
    assets.extra/reference_stats.json.
    """
    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(model_dir)
    temp_dir = model_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        build_export_archive(model, reference).write_out(str(temp_dir), verbose=False)
        write_warmup_requests(temp_dir / WARMUP_PATH, model_name, warmup_images)
        save_keras_model(model, temp_dir / KERAS_MODEL_PATH)
        if reference is not None:
            (temp_dir / REFERENCE_PATH).write_text(json.dumps(reference, indent=1))
        if before_publish is not None:
            before_publish(temp_dir)
        for _ in range(PUBLISH_ATTEMPTS):
            version = next_version(model_dir)
            # The version is known only now: another trainer may have published meanwhile.
            _write_metadata(temp_dir, metadata, version)
            target = model_dir / str(version)
            try:
                # os.rename onto an existing non-empty directory fails instead of merging.
                temp_dir.rename(target)
            except OSError:
                if version in list_versions(model_dir):
                    continue  # lost a race to a concurrent export: take the next number
                raise
            return target
        raise ExportError(f"could not publish under {model_dir}: versions kept changing")
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(
            f"export to {model_dir} failed, nothing was published: {error}"
        ) from error
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
