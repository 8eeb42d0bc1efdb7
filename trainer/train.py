"""Fit a model: optimizer choice, early stopping, learning-rate schedule, augmentation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data import Splits, scale_pixels

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class OptimizerName(StrEnum):
    """`--optimizer` choices."""

    ADAM = "adam"
    SGD = "sgd"
    RMSPROP = "rmsprop"


class LrSchedule(StrEnum):
    """`--lr-schedule` choices."""

    # The learning rate halves when validation loss stops falling (for runs of many epochs
    # with early stopping).
    PLATEAU = "plateau"
    # Cosine decay from --learning-rate to 0 over the whole run: for a run of a few epochs
    # over much data, where a plateau never shows before the end.
    COSINE = "cosine"


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
    # How hard `--augment` distorts (trainer.augment), 0 to 1.
    augment_strength: float = 1.0
    # Printed digits in the training fonts (trainer.upload_eval.training_glyphs), mixed
    # into the stream with augmentation to be about `printed_share` of what it sees.
    printed: tuple[np.ndarray, np.ndarray] | None = None
    printed_share: float = 0.2
    # (this worker's index, number of workers) when training under a multi-worker strategy.
    shard: tuple[int, int] = (0, 1)
    lr_schedule: LrSchedule = LrSchedule.PLATEAU

    @property
    def strength(self) -> float:
        """The augmentation strength in effect: 0 without --augment."""
        return self.augment_strength if self.augment else 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a run can be repeated."""
    import keras

    keras.utils.set_random_seed(seed)


def make_optimizer(name: OptimizerName | str, learning_rate: Any) -> keras.optimizers.Optimizer:
    """Return a fresh optimizer; SGD gets Nesterov momentum, the usual choice for MNIST.

    `learning_rate` is a float or a Keras learning-rate schedule.
    """
    import keras

    name = OptimizerName(name)
    if name is OptimizerName.SGD:
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name is OptimizerName.RMSPROP:
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def printed_repeats(mnist_count: int, printed_count: int, share: float) -> int:
    """How often the printed digits recur per epoch to be about `share` of the stream."""
    if printed_count == 0 or share <= 0:
        return 0
    return max(1, round(share / (1 - share) * mnist_count / printed_count))


def take_shard(batch: tuple[tf.Tensor, tf.Tensor], shard: tuple[int, int]):
    """This worker's contiguous slice of a global batch (every worker's slices add up)."""
    import tensorflow as tf

    index, count = shard
    if count == 1:
        return batch
    images, labels = batch
    per_worker = -(-tf.shape(labels)[0] // count)  # ceil: the last worker may get fewer
    start = per_worker * index
    return images[start : start + per_worker], labels[start : start + per_worker]


def make_train_dataset(x: np.ndarray, y: np.ndarray, options: FitOptions) -> tf.data.Dataset:
    """Shuffled, batched training data, this worker's shard of it, augmented on the fly.

    Every worker shuffles the same way (the seed) and batches by the global batch size,
    then keeps its own slice of each batch: together the workers take exactly the
    single-process batches, so the same seed trains the same model on 1 or N workers.
    Augmentation draws from a stream of per-batch seeds (`Dataset.random`, new each epoch)
    and this worker's index, so it is stateless and runs in parallel.
    """
    import tensorflow as tf

    from trainer.augment import augment_batch

    dataset = tf.data.Dataset.from_tensor_slices((scale_pixels(x), y))
    if options.strength > 0 and options.printed is not None:
        printed_x, printed_y = options.printed
        repeats = printed_repeats(len(y), len(printed_y), options.printed_share)
        printed = tf.data.Dataset.from_tensor_slices((scale_pixels(printed_x), printed_y))
        dataset = dataset.concatenate(printed.repeat(repeats))
    size = int(dataset.cardinality())
    dataset = dataset.shuffle(size, seed=options.seed, reshuffle_each_iteration=True)
    # Under several workers every step needs a batch on each: drop a short last batch.
    dataset = dataset.batch(options.batch_size, drop_remainder=options.shard[1] > 1)
    dataset = dataset.map(lambda *batch: take_shard(batch, options.shard))
    if options.strength > 0:
        seeds = tf.data.Dataset.random(seed=options.seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, seeds)
        worker = options.shard[0]

        def augment(batch: tuple[tf.Tensor, tf.Tensor], seed: tf.Tensor):
            images, labels = batch
            pair = tf.stack([seed, tf.constant(worker, tf.int64)])
            return augment_batch(images, pair, options.strength, labels=labels), labels

        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_val_dataset(x: np.ndarray, y: np.ndarray, options: FitOptions) -> tf.data.Dataset:
    """Validation batches (this worker's slice of each, under several workers)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((scale_pixels(x), y)).batch(
        max(options.batch_size, 256), drop_remainder=False
    )
    return dataset.map(lambda *batch: take_shard(batch, options.shard)).prefetch(2)


def steps_per_epoch(train_count: int, options: FitOptions) -> int:
    """Global batches per epoch of `make_train_dataset` over `train_count` digits."""
    total = train_count
    if options.strength > 0 and options.printed is not None:
        printed_count = len(options.printed[1])
        total += printed_count * printed_repeats(train_count, printed_count, options.printed_share)
    return max(1, -(-total // options.batch_size))


def compile_model(model: keras.Model, options: FitOptions, steps: int | None = None) -> None:
    """Compile with the run's optimizer, loss and metric; `steps` per epoch for a schedule."""
    import keras

    learning_rate: Any = options.learning_rate
    if options.lr_schedule is LrSchedule.COSINE:
        if steps is None:
            raise ValueError("a cosine schedule needs the number of steps per epoch")
        learning_rate = keras.optimizers.schedules.CosineDecay(
            options.learning_rate, decay_steps=steps * options.epochs
        )
    model.compile(
        optimizer=make_optimizer(options.optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def make_callbacks(options: FitOptions, extra: list[Any] | None = None) -> list[Any]:
    """Early stopping (best weights back), learning-rate decay on plateau, TensorBoard."""
    import keras

    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=options.patience, restore_best_weights=True
        ),
    ]
    if options.lr_schedule is LrSchedule.PLATEAU:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=0.5,
                patience=max(1, options.patience // 2),
                min_lr=1e-5,
            )
        )
    if options.tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(options.tensorboard_dir)))
    return callbacks + (extra or [])


def fit_model(model: keras.Model, splits: Splits, options: FitOptions) -> dict[str, list[float]]:
    """Compile and fit `model`; return Keras's history (per-epoch loss, accuracy, lr)."""
    compile_model(model, options, steps_per_epoch(len(splits.y_train), options))
    history = model.fit(
        make_train_dataset(splits.x_train, splits.y_train, options),
        validation_data=make_val_dataset(splits.x_val, splits.y_val, options),
        epochs=options.epochs,
        shuffle=False,  # the tf.data pipeline already reshuffles every epoch
        callbacks=make_callbacks(options),
        # The progress bar is for people; logs and CI get one line per epoch.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def fit_under_strategy(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_data: Any,
    val_data: Any,
    options: FitOptions,
    train_count: int,
    extra_callbacks: list[Any] | None = None,
) -> dict[str, list[float]]:
    """What `fit_model` does, as a loop over `strategy.run`, for multi-worker training.

    Keras 3's `model.fit` cannot run under MultiWorkerMirroredStrategy (it reduces scalar
    logs along axis 0: tensorflow/tensorflow#72388), so the epoch loop is written out
    here; TensorFlow's strategy still does the distributed work (per-replica steps, the
    optimizer's all-reduce of the gradients), and the callbacks are `fit_model`'s own.
    The loss is the sum over each worker's slice divided by the global batch, so the
    summed gradients are those of the global batch's mean, as in one process. Call it
    in `strategy.scope()` with the datasets from `distribute_datasets_from_function`;
    `train_count` is the number of training digits (for a schedule's length).
    """
    import keras
    import tensorflow as tf

    compile_model(model, options, steps_per_epoch(train_count, options))
    model.optimizer.build(model.trainable_variables)
    per_example = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    global_batch = options.batch_size

    def sums(probabilities: tf.Tensor, labels: tf.Tensor, losses: tf.Tensor) -> list[tf.Tensor]:
        predicted = tf.argmax(probabilities, axis=1, output_type=labels.dtype)
        return [
            tf.reduce_sum(losses),
            tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32)),
            tf.cast(tf.size(labels), tf.float32),
        ]

    def train_replica(images: tf.Tensor, labels: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            losses = per_example(labels, probabilities)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return sums(probabilities, labels, losses)

    def eval_replica(images: tf.Tensor, labels: tf.Tensor) -> list[tf.Tensor]:
        probabilities = model(images, training=False)
        return sums(probabilities, labels, per_example(labels, probabilities))

    def distributed(replica_fn: Any) -> Any:
        @tf.function
        def step(batch: Any) -> list[tf.Tensor]:
            results = strategy.run(replica_fn, args=batch)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

        return step

    train_step, eval_step = distributed(train_replica), distributed(eval_replica)

    def run_epoch(step: Any, data: Any, on_batch: Any) -> tuple[float, float]:
        totals = np.zeros(3)
        for index, batch in enumerate(data):
            totals += [float(value) for value in step(batch)]
            on_batch(index)
        return totals[0] / max(totals[2], 1), totals[1] / max(totals[2], 1)

    callbacks = keras.callbacks.CallbackList(
        make_callbacks(options, extra_callbacks), add_history=False, model=model
    )
    history: dict[str, list[float]] = {}
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(options.epochs):
        started = time.perf_counter()
        callbacks.on_epoch_begin(epoch)
        loss, accuracy = run_epoch(train_step, train_data, callbacks.on_train_batch_end)
        val_loss, val_accuracy = run_epoch(eval_step, val_data, callbacks.on_test_batch_end)
        logs = {
            "accuracy": accuracy, "loss": loss, "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        }  # fmt: skip
        callbacks.on_epoch_end(epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        print(
            f"Epoch {epoch + 1}/{options.epochs} - {time.perf_counter() - started:.0f}s - "
            + " - ".join(f"{key}: {value:.4f}" for key, value in logs.items()),
            flush=True,
        )
        if model.stop_training:
            break
    callbacks.on_train_end()
    return history
