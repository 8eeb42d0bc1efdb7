"""Fit a model: optimizer choice, early stopping, learning-rate schedule, augmentation."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data import IMAGE_SHAPE, Splits, scale_pixels

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class OptimizerName(StrEnum):
    """`--optimizer` choices."""

    ADAM = "adam"
    SGD = "sgd"
    RMSPROP = "rmsprop"


@dataclass(frozen=True)
class FitOptions:
    """Hyperparameters of one training run."""

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: OptimizerName
    seed: int
    augment: bool
    patience: int
    tensorboard_dir: Path | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a run can be repeated."""
    import keras

    keras.utils.set_random_seed(seed)


def make_optimizer(name: OptimizerName | str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Return a fresh optimizer; SGD gets Nesterov momentum, the usual choice for MNIST."""
    import keras

    name = OptimizerName(name)
    if name is OptimizerName.SGD:
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name is OptimizerName.RMSPROP:
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def make_augmenter(seed: int) -> keras.Sequential:
    """Small rotations, zooms and shifts; never flips, because a mirrored 2 is not a 2."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.Reshape((*IMAGE_SHAPE, 1)),
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # about +-11 degrees
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 2),
            layers.Reshape(IMAGE_SHAPE),
        ],
        name="augment",
    )


def make_train_dataset(x: np.ndarray, y: np.ndarray, options: FitOptions) -> tf.data.Dataset:
    """Shuffled, batched training data; augmented on the fly when asked."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((scale_pixels(x), y))
    dataset = dataset.shuffle(len(y), seed=options.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(options.batch_size)
    if options.augment:
        augmenter = make_augmenter(options.seed)
        # Sequential on purpose: parallel calls would draw from the augmenter's random
        # state in a racy order, and the same seed would no longer give the same model.
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels))
    return dataset.prefetch(tf.data.AUTOTUNE)


def fit_model(model: keras.Model, splits: Splits, options: FitOptions) -> dict[str, list[float]]:
    """Compile and fit `model`; return Keras's history (per-epoch loss, accuracy, lr)."""
    import keras

    model.compile(
        optimizer=make_optimizer(options.optimizer, options.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=options.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, options.patience // 2), min_lr=1e-5
        ),
    ]
    if options.tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(options.tensorboard_dir)))
    history = model.fit(
        make_train_dataset(splits.x_train, splits.y_train, options),
        validation_data=(scale_pixels(splits.x_val), splits.y_val),
        epochs=options.epochs,
        shuffle=False,  # the tf.data pipeline already reshuffles every epoch
        callbacks=callbacks,
        # The progress bar is for people; logs and CI get one line per epoch.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}
