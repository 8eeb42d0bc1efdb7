"""Fixtures local to the gateway tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def classify_digits(trained_repository: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The fixture model's serving_default, loaded in-process: [N,28,28] -> classes [N].

    The golden tests judge preprocessing by what the real model makes of its output.
    """
    import tensorflow as tf

    signature = tf.saved_model.load(str(trained_repository / "mnist" / "1")).signatures[
        "serving_default"
    ]

    def classify(batch: np.ndarray) -> np.ndarray:
        outputs = signature(images=tf.constant(batch, dtype=tf.float32))
        return outputs["probabilities"].numpy().argmax(axis=1)

    return classify
