"""Every architecture builds and learns; optimizers and augmentation behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data import Splits, load_offline, scale_pixels, split_dataset
from trainer.models import Architecture, build_model
from trainer.train import FitOptions, OptimizerName, fit_model, make_optimizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_splits() -> Splits:
    full = split_dataset(load_offline(), 0.1, 0.2, seed=0)
    return Splits(
        full.x_train[:640], full.y_train[:640], full.x_val[:200], full.y_val[:200],
        full.x_test[:200], full.y_test[:200],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("architecture", "augment"),
    [
        (Architecture.MLP, False),
        (Architecture.MLP_BN, False),
        (Architecture.CNN, True),
        (Architecture.CNN_BN, True),
    ],
)
def test_model_builds_and_learns_in_a_few_steps(
    architecture: Architecture, augment: bool, small_splits: Splits
) -> None:
    model = build_model(architecture)
    assert model.input_shape == (None, 28, 28)
    assert model.output_shape == (None, 10)
    images = scale_pixels(small_splits.x_val)
    before = model.predict(images, verbose=0)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)

    options = FitOptions(
        epochs=2, batch_size=32, learning_rate=1e-3, optimizer=OptimizerName.ADAM,
        seed=0, augment=augment, patience=3,
    )  # fmt: skip
    history = fit_model(model, small_splits, options)
    assert len(history["loss"]) == 2
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    accuracy = (model.predict(images, verbose=0).argmax(axis=1) == small_splits.y_val).mean()
    # 40 steps on 640 digits: well above the 10% of chance, whatever the architecture.
    assert accuracy > 0.4, f"{architecture} reached only {accuracy:.2f}"


def test_units_and_dropout_change_the_architecture() -> None:
    wide = build_model(Architecture.MLP, units=256, dropout=0.2)
    assert [layer.units for layer in wide.layers if type(layer).__name__ == "Dense"] == [
        256,
        128,
        10,
    ]
    assert [layer.rate for layer in wide.layers if hasattr(layer, "rate")] == [0.2, 0.2]
    cnn = build_model(Architecture.CNN, units=64, dropout=0.5)
    assert [layer.units for layer in cnn.layers if type(layer).__name__ == "Dense"] == [64, 10]
    assert [layer.rate for layer in cnn.layers if hasattr(layer, "rate")] == [0.5]


def test_architectures_match_the_seed_tutorials() -> None:
    def layer_kinds(architecture: Architecture) -> list[str]:
        return [type(layer).__name__ for layer in build_model(architecture).layers]

    assert layer_kinds(Architecture.MLP) == ["InputLayer", "Flatten", "Dense", "Dense", "Dense"]
    assert layer_kinds(Architecture.MLP_BN).count("BatchNormalization") == 2
    assert layer_kinds(Architecture.MLP_BN).count("Dropout") == 2
    assert [layer.rate for layer in build_model("mlp-bn").layers if hasattr(layer, "rate")] == [
        0.3,
        0.3,
    ]
    cnn = build_model(Architecture.CNN)
    convs = [layer for layer in cnn.layers if type(layer).__name__ == "Conv2D"]
    assert [(c.filters, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (3, 3))]
    assert layer_kinds(Architecture.CNN).count("MaxPooling2D") == 2
    # cnn-bn: the same convolutions, each normalised before its ReLU (so without a bias).
    cnn_bn = build_model(Architecture.CNN_BN)
    convs = [layer for layer in cnn_bn.layers if type(layer).__name__ == "Conv2D"]
    assert [(c.filters, c.kernel_size, c.use_bias) for c in convs] == [
        (32, (3, 3), False),
        (64, (3, 3), False),
    ]
    kinds = layer_kinds(Architecture.CNN_BN)
    assert kinds.count("BatchNormalization") == 2 and kinds.count("MaxPooling2D") == 2
    assert kinds.index("BatchNormalization") < kinds.index("Activation")


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop")]
)
def test_optimizer_choice(name: str, cls: str) -> None:
    optimizer = make_optimizer(name, 0.01)
    assert type(optimizer).__name__ == cls
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_training_is_reproducible_with_a_seed(small_splits: Splits) -> None:
    from trainer.train import seed_everything

    options = FitOptions(
        epochs=1, batch_size=32, learning_rate=1e-3, optimizer=OptimizerName.ADAM,
        seed=11, augment=True, patience=3,
    )  # fmt: skip
    images = scale_pixels(small_splits.x_val)
    few = Splits(
        small_splits.x_train[:256], small_splits.y_train[:256], small_splits.x_val,
        small_splits.y_val, small_splits.x_test, small_splits.y_test,
    )  # fmt: skip

    def train_once(seed: int) -> np.ndarray:
        seed_everything(seed)
        model = build_model(Architecture.MLP)
        fit_model(model, few, options)
        return model.predict(images, verbose=0)

    seed_everything(11)
    untrained = build_model(Architecture.MLP).predict(images, verbose=0)
    first, second = train_once(11), train_once(11)
    assert not np.allclose(first, untrained, atol=1e-3)  # training did change the model
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_steps_per_epoch_counts_the_batches_the_pipeline_makes() -> None:
    import dataclasses

    from trainer.train import make_train_dataset, steps_per_epoch

    sample = load_offline()
    x, y = sample.x_train[:300], sample.y_train[:300]
    printed = (np.full((40, 28, 28), 255, np.uint8), np.full(40, 3, np.int64))
    base = FitOptions(
        epochs=1, batch_size=64, learning_rate=1e-3, optimizer=OptimizerName.ADAM,
        seed=0, augment=False, patience=1, printed=printed,
    )  # fmt: skip
    for options in (base, dataclasses.replace(base, augment=True, printed_share=0.2)):
        batches = len(list(make_train_dataset(x, y, options)))
        assert steps_per_epoch(len(y), options) == batches


def test_cosine_schedule_decays_to_zero_over_the_run_without_plateau_halving() -> None:
    import keras

    from trainer.train import LrSchedule, compile_model, make_callbacks

    options = FitOptions(
        epochs=3, batch_size=32, learning_rate=3e-3, optimizer=OptimizerName.ADAM,
        seed=0, augment=False, patience=5, lr_schedule=LrSchedule.COSINE,
    )  # fmt: skip
    model = build_model(Architecture.MLP)
    compile_model(model, options, steps=10)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(3e-3)
    assert float(schedule(15)) == pytest.approx(1.5e-3, rel=1e-3)  # half way: half the rate
    assert float(schedule(30)) == pytest.approx(0.0, abs=1e-9)
    names = [type(callback).__name__ for callback in make_callbacks(options)]
    assert "ReduceLROnPlateau" not in names and "EarlyStopping" in names
    with pytest.raises(ValueError, match="steps per epoch"):
        compile_model(build_model(Architecture.MLP), options)
