"""The exported SavedModel: layout, signatures, predictions, warmup file, atomic publishing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.repository import MODEL_NAME
from trainer.data import scale_pixels
from trainer.errors import ExportError
from trainer.export import KERAS_MODEL_PATH, export_model
from trainer.repository import METADATA_PATH, WARMUP_PATH, list_versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def version_dir(trained_repository: Path) -> Path:
    return trained_repository / MODEL_NAME / "1"


@pytest.fixture(scope="module")
def loaded(version_dir: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(version_dir))


@pytest.fixture(scope="module")
def bn_model(mnist_test_images):
    """An mlp-bn fitted a few steps, so BatchNorm statistics and Dropout matter at export."""
    import keras

    from trainer.data import load_offline, split_dataset
    from trainer.models import build_model
    from trainer.train import seed_everything

    seed_everything(1)
    splits = split_dataset(load_offline(), 0.1, 0.2, seed=1)
    model = build_model("mlp-bn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(scale_pixels(splits.x_train[:512]), splits.y_train[:512], epochs=1, verbose=0)
    assert isinstance(model, keras.Model)
    return model


def test_version_layout_matches_tf_serving(version_dir: Path) -> None:
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert (version_dir / WARMUP_PATH).is_file()
    metadata = json.loads((version_dir / METADATA_PATH).read_text())
    assert metadata["model_name"] == MODEL_NAME
    assert metadata["version"] == 1
    assert metadata["architecture"] == "mlp"
    assert 0.0 < metadata["metrics"]["accuracy"] <= 1.0
    assert metadata["metrics"]["loss"] > 0
    assert set(metadata["metrics"]["per_class"]) == {str(c) for c in range(10)}
    assert metadata["dataset"]["source"].startswith("offline:")
    assert metadata["dataset"]["checksum"].startswith("sha256:")
    assert metadata["hyperparameters"]["epochs"] == 3
    assert metadata["created_at"].endswith("Z")
    assert "git_revision" in metadata


def test_signatures_have_exact_names_dtypes_and_shapes(loaded) -> None:
    import tensorflow as tf

    assert set(loaded.signatures) == {"serving_default", "predict_images", "reference_stats"}

    default = loaded.signatures["serving_default"]
    (args, kwargs) = default.structured_input_signature
    assert args == ()
    assert set(kwargs) == {"images"}
    assert kwargs["images"].dtype == tf.float32
    assert kwargs["images"].shape.as_list() == [None, 28, 28]
    outputs = default.structured_outputs
    assert set(outputs) == {"probabilities", "classes"}
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["classes"].dtype == tf.int64
    assert outputs["classes"].shape.as_list() == [None]

    legacy = loaded.signatures["predict_images"]
    (args, kwargs) = legacy.structured_input_signature
    assert set(kwargs) == {"images"}
    assert kwargs["images"].dtype == tf.float32
    assert kwargs["images"].shape.as_list() == [None, 784]
    outputs = legacy.structured_outputs
    assert set(outputs) == {"scores"}
    assert outputs["scores"].dtype == tf.float32
    assert outputs["scores"].shape.as_list() == [None, 10]

    reference = loaded.signatures["reference_stats"]
    assert reference.structured_input_signature == ((), {})
    assert all(spec.dtype == tf.float32 for spec in reference.structured_outputs.values())
    assert {"samples", "class_cuts", "class_proportions", "ink_fraction_cuts"} <= set(
        reference.structured_outputs
    )


def test_reference_stats_describe_the_held_out_split(loaded, version_dir: Path) -> None:
    """The signature's constants are the reference the trainer wrote beside it."""
    import json

    written = json.loads((version_dir / "assets.extra" / "reference_stats.json").read_text())
    served = {k: v.numpy() for k, v in loaded.signatures["reference_stats"]().items()}
    assert served["samples"] == written["samples"] > 0
    for statistic in ("class", "confidence", "ink_fraction", "bbox_center_y"):
        proportions = served[f"{statistic}_proportions"]
        assert proportions.sum() == pytest.approx(1.0, abs=1e-5)
        assert proportions.tolist() == pytest.approx(written[statistic]["proportions"])
        assert len(served[f"{statistic}_cuts"]) == len(proportions) - 1


def test_exported_model_classifies_held_out_digits(loaded, mnist_test_images) -> None:
    images, labels = mnist_test_images
    result = loaded.signatures["serving_default"](images=scale_pixels(images))
    probabilities = result["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    classes = result["classes"].numpy()
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))
    # Three epochs of an mlp on 3,500 digits: far above chance, not yet the tuned figure.
    assert (classes == labels).mean() > 0.8

    scores = loaded.signatures["predict_images"](images=scale_pixels(images).reshape(-1, 784))
    np.testing.assert_allclose(scores["scores"].numpy(), probabilities, atol=1e-6)


def test_export_predictions_match_in_memory_model(
    bn_model, mnist_test_images, tmp_path: Path
) -> None:
    import tensorflow as tf

    images = scale_pixels(mnist_test_images[0][:64])
    expected = bn_model.predict(images, verbose=0)
    version_dir = export_model(bn_model, tmp_path, "bn", {}, mnist_test_images[0][:8])
    loaded = tf.saved_model.load(str(version_dir))
    got = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    flat = loaded.signatures["predict_images"](images=tf.constant(images.reshape(-1, 784)))
    np.testing.assert_allclose(flat["scores"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_warmup_file_holds_prediction_logs_for_both_signatures(version_dir: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    seen = []
    for record in tf.data.TFRecordDataset(str(version_dir / WARMUP_PATH)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        images = tf.make_ndarray(request.inputs["images"])
        assert images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
        seen.append((request.model_spec.signature_name, images.shape))
    assert ("serving_default", (1, 28, 28)) in seen
    assert ("predict_images", (8, 784)) in seen
    assert {name for name, _ in seen} == {"serving_default", "predict_images"}


def test_versions_increase_by_one(bn_model, mnist_test_images, tmp_path: Path) -> None:
    warmup = mnist_test_images[0][:8]
    first = export_model(bn_model, tmp_path, "m", {"tag": "a"}, warmup)
    second = export_model(bn_model, tmp_path, "m", {"tag": "b"}, warmup)
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((second / METADATA_PATH).read_text()) == {"tag": "b", "version": 2}
    # A gap (say version 5 restored from a backup) still continues from the highest.
    (tmp_path / "m" / "5").mkdir()
    assert export_model(bn_model, tmp_path, "m", {}, warmup).name == "6"


def test_interrupted_export_publishes_nothing(bn_model, mnist_test_images, tmp_path: Path) -> None:
    written: list[Path] = []

    def crash_before_rename(temp_dir: Path) -> None:
        written.append(temp_dir)
        assert (temp_dir / "saved_model.pb").is_file()  # the export was complete...
        raise OSError("disk vanished")  # ...and dies just before publishing

    with pytest.raises(ExportError, match="nothing was published"):
        export_model(bn_model, tmp_path, "m", {}, mnist_test_images[0][:8], crash_before_rename)
    assert written and not written[0].name.isdigit()
    assert written[0].parent == tmp_path / "m"  # same parent, so the rename is atomic
    assert list_versions(tmp_path / "m") == []
    assert list((tmp_path / "m").iterdir()) == []  # and the temporary directory is gone


def test_stale_temporary_exports_are_removed(tmp_path: Path) -> None:
    from trainer.export import TEMP_PREFIX, remove_stale_exports

    stale, fresh = tmp_path / f"{TEMP_PREFIX}old", tmp_path / f"{TEMP_PREFIX}new"
    (stale / "variables").mkdir(parents=True)
    fresh.mkdir()
    (tmp_path / "1").mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert remove_stale_exports(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["1", f"{TEMP_PREFIX}new"])


def test_export_runs_in_a_session_as_tf_serving_loads_it(
    bn_model, mnist_test_images, tmp_path: Path
) -> None:
    """TF Serving imports the MetaGraph into a Session and restores variables by the restore
    op; a Keras 3 model saved as a tf.Module attribute passes the eager reload above but
    fails there with "Could not find variable" (keras-team/keras#20096)."""
    import tensorflow as tf

    images = scale_pixels(mnist_test_images[0][:16])
    expected = bn_model.predict(images, verbose=0)
    version_dir = export_model(bn_model, tmp_path, "bn", {}, mnist_test_images[0][:8])
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
        signature = meta_graph.signature_def["serving_default"]
        got = session.run(
            signature.outputs["probabilities"].name, {signature.inputs["images"].name: images}
        )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_model_keras_is_saved_without_optimizer_and_predicts_as_the_saved_model(
    version_dir: Path, loaded, mnist_test_images
) -> None:
    import keras
    import tensorflow as tf

    path = version_dir / KERAS_MODEL_PATH
    # Weights and config only: Adam's two slots per weight would triple the file.
    weights = sum(f.stat().st_size for f in (version_dir / "variables").iterdir())
    assert path.stat().st_size < 1.5 * weights
    model = keras.saving.load_model(str(path), compile=False)
    images = tf.constant(scale_pixels(mnist_test_images[0][:64]))
    np.testing.assert_allclose(
        model(images, training=False).numpy(),
        loaded.signatures["serving_default"](images=images)["probabilities"].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
