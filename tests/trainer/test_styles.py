"""The hollow "bubble" style: the model's input form, deterministic, and really hollow."""

from __future__ import annotations

import numpy as np

from trainer.data import load_offline, scale_pixels
from trainer.styles import hollow_strokes, style_digits


def test_style_digits_are_model_input_and_deterministic_by_seed() -> None:
    images, labels = style_digits(40, seed=5)
    assert images.shape == (40, 28, 28) and images.dtype == np.float32
    assert labels.shape == (40,) and labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(labels.tolist()) <= set(range(10))
    again, same_labels = style_digits(40, seed=5)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(same_labels, labels)
    other, _ = style_digits(40, seed=6)
    assert not np.array_equal(other, images)
    assert style_digits(0)[0].shape == (0, 28, 28)


def test_a_hollow_one_is_two_walls_around_a_dark_core() -> None:
    mnist = load_offline()
    ones = mnist.x_train[np.flatnonzero(mnist.y_train == 1)[:20]]
    hollow = hollow_strokes(ones)
    # A 1 is one stroke: thickened and outlined, each middle row crosses two separate
    # walls (two runs of ink), where the plain digit has one.
    ink = hollow[:, 10:18, :] > 0.3
    runs = (ink[:, :, 1:] & ~ink[:, :, :-1]).sum(axis=2) + ink[:, :, 0]
    assert np.median(runs) == 2
    # As the gateway fits digits: the longer side about 20 px, centre of mass near (14, 14).
    for digit in hollow:
        ys, xs = np.nonzero(digit)
        assert 18 <= max(np.ptp(ys), np.ptp(xs)) + 1 <= 21
        total = digit.sum()
        assert abs((ys * digit[ys, xs]).sum() / total - 14) < 1.5
    # Less ink than the thick stroke it outlines, more than nothing.
    assert 0 < hollow.sum() < 4 * scale_pixels(ones).sum()
