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
    CNN_BN = "cnn-bn"


# The seed tutorials' sizes: what `build_model` builds unless told otherwise (and the
# defaults `trainer tune` declares for its search space).
DEFAULT_UNITS = 128
DEFAULT_DROPOUT: dict[Architecture, float] = {
    Architecture.MLP: 0.0,
    Architecture.MLP_BN: 0.3,
    Architecture.CNN: 0.0,
    Architecture.CNN_BN: 0.0,
}


def build_model(
    architecture: Architecture | str, units: int | None = None, dropout: float | None = None
) -> keras.Model:
    """Build (uncompiled) the named architecture.

    `units` is the first dense layer's width (the MLPs' second has half), `dropout` the
    rate after each dense hidden layer; None keeps the seed tutorials' values.
    """
    import keras
    from keras import layers

    architecture = Architecture(architecture)
    units = units or DEFAULT_UNITS
    dropout = DEFAULT_DROPOUT[architecture] if dropout is None else dropout
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="images")
    if architecture is Architecture.MLP:
        x = layers.Flatten()(inputs)
        for width in (units, units // 2):
            x = layers.Dense(width, activation="relu")(x)
            if dropout:
                x = layers.Dropout(dropout)(x)
    elif architecture is Architecture.MLP_BN:
        x = layers.Flatten()(inputs)
        for width in (units, units // 2):
            x = layers.Dense(width, activation="relu")(x)
            x = layers.BatchNormalization()(x)
            x = layers.Dropout(dropout)(x)
    else:
        # cnn-bn normalises each convolution before its ReLU (so the convolution needs no
        # bias), with momentum 0.9, not Keras' 0.99: the offline sample gives about 27
        # steps per epoch, and at 0.99 the initial statistics would still weigh in at
        # inference after hundreds of steps. A choice, not the default: it gained within
        # the seeds' spread on the offline sample and lost on the whole MNIST (git log).
        batch_norm = architecture is Architecture.CNN_BN
        x = layers.Reshape((*IMAGE_SHAPE, 1))(inputs)
        for filters in (32, 64):
            if batch_norm:
                x = layers.Conv2D(filters, 3, use_bias=False)(x)
                x = layers.BatchNormalization(momentum=0.9)(x)
                x = layers.Activation("relu")(x)
            else:
                x = layers.Conv2D(filters, 3, activation="relu")(x)
            x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        x = layers.Dense(units, activation="relu")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=architecture.value.replace("-", "_"))
