"""Loading a version as TF Serving does: a Session, the restore op, signature tensor names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.errors import FailedPreconditionError
from serving.servable import load_servable

pytestmark = pytest.mark.slow


def test_trainer_export_serves_the_eager_results(trained_repository: Path) -> None:
    import tensorflow as tf

    version_dir = trained_repository / "mnist" / "1"
    servable = load_servable("mnist", 1, version_dir)
    images = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    expected = tf.saved_model.load(str(version_dir)).signatures["serving_default"](images=images)
    got = servable.run(servable.signature(""), {"images": images})
    assert set(got) == {"classes", "probabilities"}
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["classes"], expected["classes"].numpy())


def test_keras_model_saved_inside_a_tf_module_fails_as_in_tf_serving(tmp_path: Path) -> None:
    """The eager reload of this export works, TF Serving's Session does not: neither may we."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    class Wrapper(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.model(x)}

    wrapper = Wrapper()
    tf.saved_model.save(wrapper, str(tmp_path / "1"), signatures={"serving_default": wrapper.serve})
    x = np.ones((1, 4), np.float32)
    eager = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"](x=x)
    assert eager["y"].shape == (1, 2)

    servable = load_servable("wrapped", 1, tmp_path / "1")
    with pytest.raises(FailedPreconditionError, match="Could not find variable"):
        servable.run(servable.signature(""), {"x": x})
