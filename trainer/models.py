"""The seed tutorials' architectures. Every model takes float32 images [N,28,28] in [0,1]
and returns softmax probabilities [N,10]."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from trainer.data import IMAGE_SHAPE, NUM_CLASSES

if TYPE_CHECKING:
    import keras


class Architecture(StrEnum):
    """`--model` choices."""

    MLP = "mlp"
    MLP_BN = "mlp-bn"
    CNN = "cnn"


def build_model(architecture: Architecture | str) -> keras.Model:
    """Build (uncompiled) the named architecture."""
    import keras
    from keras import layers

    architecture = Architecture(architecture)
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="images")
    if architecture is Architecture.MLP:
        x = layers.Flatten()(inputs)
        x = layers.Dense(128, activation="relu")(x)
        x = layers.Dense(64, activation="relu")(x)
    elif architecture is Architecture.MLP_BN:
        x = layers.Flatten()(inputs)
        for units in (128, 64):
            x = layers.Dense(units, activation="relu")(x)
            x = layers.BatchNormalization()(x)
            x = layers.Dropout(0.3)(x)
    else:
        x = layers.Reshape((*IMAGE_SHAPE, 1))(inputs)
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=architecture.value.replace("-", "_"))
