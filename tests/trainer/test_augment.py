"""Upload augmentation: seeded, bounded, never mirrors, and what the gateway would make."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from trainer.data import load_offline, scale_pixels
from trainer.train import FitOptions, OptimizerName, make_train_dataset, printed_repeats


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    sample = load_offline()
    picks = np.random.default_rng(0).choice(len(sample.y_train), 64, replace=False)
    return scale_pixels(sample.x_train[picks])


def augmented(images: np.ndarray, seed: tuple[int, int], strength: float = 1.0) -> np.ndarray:
    import tensorflow as tf

    from trainer.augment import augment_batch

    return augment_batch(tf.constant(images), tf.constant(seed, tf.int64), strength).numpy()


def test_same_seed_same_digits_other_seed_other_digits(digits: np.ndarray) -> None:
    first, again = augmented(digits, (1, 2)), augmented(digits, (1, 2))
    np.testing.assert_array_equal(first, again)
    other = augmented(digits, (1, 3))
    assert not np.allclose(first, other)
    assert first.shape == digits.shape
    assert first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(augmented(digits, (1, 2), strength=0.0), digits)


def test_strength_scales_how_far_digits_move(digits: np.ndarray) -> None:
    def change(strength: float) -> float:
        return float(np.abs(augmented(digits, (5, 5), strength) - digits).mean())

    assert 0 < change(0.2) < change(1.0)


def test_it_never_mirrors(digits: np.ndarray) -> None:
    # An L: mirrored left-right or upside down it would correlate with its flip instead.
    probe = np.zeros((64, 28, 28), dtype=np.float32)
    probe[:, 6:22, 8:11] = 1.0
    probe[:, 19:22, 8:20] = 1.0
    out = augmented(probe, (9, 9))
    for flipped in (probe[:, :, ::-1], probe[:, ::-1, :]):
        same = (out * probe).sum(axis=(1, 2))
        mirror = (out * flipped).sum(axis=(1, 2))
        # Heavy distortions blur the call for a few digits; a flip would lose nearly all.
        assert (same > mirror).mean() > 0.85
        assert same.mean() > 1.3 * mirror.mean()


def test_thickness_dilates_and_erodes() -> None:
    import tensorflow as tf

    from trainer.augment import change_thickness

    images = np.zeros((200, 28, 28), dtype=np.float32)
    images[:, 8:20, 12:15] = 1.0
    out = change_thickness(tf.constant(images), tf.constant([4, 4], tf.int64), 1.0).numpy()
    mass = out.sum(axis=(1, 2))
    base = images[0].sum()
    assert (mass > base).sum() > 60 and (mass < base).sum() > 60


def test_the_simulated_gateway_agrees_with_the_gateway() -> None:
    """A digit moved off-centre and shrunk: both put it back the same way."""
    import tensorflow as tf
    from PIL import Image

    from gateway.preprocessing import prepare_image
    from trainer.augment import simulate_gateway

    sample = load_offline()
    originals = sample.x_train[:20].astype(np.float32)
    moved = np.zeros_like(originals)
    for i, image in enumerate(originals):
        small = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
        moved[i, 1:17, 10:26] = small
    simulated = simulate_gateway(tf.constant(moved / 255.0)).numpy()
    correlations = []
    for i, image in enumerate(moved):
        gray = Image.fromarray((255 - image).astype(np.uint8))  # dark on light, as uploaded
        buffer = io.BytesIO()
        gray.save(buffer, "PNG")
        real = prepare_image(buffer.getvalue())
        correlations.append(np.corrcoef(real.ravel(), simulated[i].ravel())[0, 1])
    # Bilinear where the gateway uses Lanczos, so close rather than equal.
    assert min(correlations) > 0.85 and np.mean(correlations) > 0.95, correlations


def test_otsu_is_the_gateways() -> None:
    import tensorflow as tf

    from gateway.preprocessing import otsu_threshold
    from trainer.augment import otsu_thresholds

    values = np.random.default_rng(0).uniform(0, 255, (5, 784)).astype(np.float32)
    values[2, :300] = 20  # bimodal
    values[2, 300:] = 200
    expected = [otsu_threshold(row) for row in values]
    np.testing.assert_array_equal(otsu_thresholds(tf.constant(values)).numpy(), expected)


def options(**overrides) -> FitOptions:
    base = FitOptions(
        epochs=1, batch_size=32, learning_rate=1e-3, optimizer=OptimizerName.ADAM,
        seed=3, augment=False, patience=1,
    )  # fmt: skip
    return dataclasses.replace(base, **overrides)


def test_workers_shards_add_up_to_the_single_process_batches() -> None:
    sample = load_offline()
    x, y = sample.x_train[:200], sample.y_train[:200]
    single = list(make_train_dataset(x, y, options(batch_size=32, shard=(0, 1))))
    shards = [list(make_train_dataset(x, y, options(batch_size=32, shard=(i, 2)))) for i in (0, 1)]
    # Under two workers a short last batch is dropped (every step needs both).
    assert len(shards[0]) == len(shards[1]) == len(single) - 1 == 6
    for whole, first, second in zip(single, *shards, strict=False):
        np.testing.assert_array_equal(whole[1], np.concatenate([first[1], second[1]]))
        np.testing.assert_array_equal(whole[0], np.concatenate([first[0], second[0]]))


def test_printed_digits_are_mixed_in_only_with_augment() -> None:
    sample = load_offline()
    x, y = sample.x_train[:300], sample.y_train[:300]
    printed = (np.full((40, 28, 28), 255, np.uint8), np.full(40, 3, np.int64))
    plain = options(batch_size=1000, printed=printed)
    (only,) = list(make_train_dataset(x, y, plain))
    assert len(only[1]) == 300
    mixed = options(batch_size=1000, printed=printed, augment=True, printed_share=0.2)
    (batch,) = list(make_train_dataset(x, y, mixed))
    repeats = printed_repeats(300, 40, 0.2)
    assert repeats == 2 and len(batch[1]) == 300 + 40 * repeats


def test_writing_conventions_cross_sevens_and_flag_ones_only() -> None:
    import tensorflow as tf

    from trainer.augment import writing_conventions

    sample = load_offline()
    picks = np.concatenate([np.where(sample.y_train == d)[0][:8] for d in range(10)])
    images, labels = scale_pixels(sample.x_train[picks]), sample.y_train[picks]
    out = writing_conventions(
        tf.constant(images), tf.constant(labels), tf.constant([4, 2], tf.int64), 1.0
    ).numpy()
    added = np.clip(out - images, 0, None)
    changed = added.sum(axis=(1, 2)) > 2.0  # at least two pixels' worth of new ink
    assert changed[(labels == 1) | (labels == 7)].all()
    others = (labels != 1) & (labels != 7)
    np.testing.assert_array_equal(out[others], images[others])
    rows = np.arange(28)[None, :, None]
    for index in np.where(labels == 7)[0]:
        weights = added[index] / added[index].sum()
        # A crossbar: the new ink lies in a band a few rows high, below the 7's top bar.
        spread = np.sqrt((weights * (rows[0] - (weights * rows[0]).sum()) ** 2).sum())
        ink_rows = np.where(images[index].max(axis=1) > 0.5)[0]
        centre = (weights * rows[0]).sum()
        assert spread < 2.5
        assert ink_rows.min() + 0.3 * np.ptp(ink_rows) < centre < ink_rows.max()
    for index in np.where(labels == 1)[0]:
        ink_rows = np.where(images[index].max(axis=1) > 0.5)[0]
        upper = rows[0] <= ink_rows.min() + 0.4 * np.ptp(ink_rows)
        # A flag: new ink at the top (part of it may fall on the stroke), whether or
        # not a foot was drawn at the bottom too.
        assert (added[index] * upper).sum() > 1.5
    assert (out.min() >= 0) and (out.max() <= 1)


def test_the_elastic_field_is_the_bicubic_resize_of_its_coarse_grid() -> None:
    import tensorflow as tf

    from trainer.augment import ELASTIC_GRID, _upsampling_matrix

    coarse = tf.random.stateless_uniform([3, ELASTIC_GRID, ELASTIC_GRID, 2], [1, 1], -1, 1)
    expected = tf.image.resize(coarse, (28, 28), method="bicubic").numpy()
    flat = tf.reshape(coarse, [3, ELASTIC_GRID * ELASTIC_GRID, 2])
    field = tf.einsum("bkc,kp->bpc", flat, _upsampling_matrix()).numpy().reshape(3, 28, 28, 2)
    np.testing.assert_allclose(field, expected, atol=1e-5)
