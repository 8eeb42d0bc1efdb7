"""Upload augmentation: distort training digits, on the fly, the ways uploads differ from MNIST.

Every step is a TensorFlow op on a whole batch (float32 [B,28,28] in [0,1], light ink on
black), drawn from stateless random ops seeded per batch, so a `tf.data` map can run it in
parallel and the same seed still gives the same model. Nothing is copied in memory: each
epoch sees new distortions of the same digits.

The steps, in the order an upload meets them:

0. writing conventions: crossed 7s, 1s with a flag (and a foot), as much of the world
   writes them (needs the labels);
1. stroke thickness: dilation or erosion (pens and fonts differ from MNIST's pen);
2. slant, rotation and scale (an affine transform per digit);
3. elastic distortion (a smooth random displacement field, as handwriting wobbles);
4. off-centre crop: the digit shifted until the frame may cut a sliver of it;
5. low resolution (a digit that reached the camera as a few pixels), uneven light on
   more paper than digit, blur, noise and JPEG artefacts, applied before
6. the gateway's preprocessing, simulated: background removal, crop to the ink, scale
   the longer side to 20 px, centre of mass to (14, 14), as `gateway.preprocessing` does.

`strength` (0 to 1, `--augment-strength`) scales every magnitude and probability; 0 is
no augmentation at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.data import IMAGE_SHAPE

if TYPE_CHECKING:
    import tensorflow as tf

SIZE = IMAGE_SHAPE[0]
DIGIT_BOX = 20  # gateway.preprocessing.DIGIT_BOX: the longer side of a digit, in pixels
CENTRE = 14.0  # where gateway.preprocessing puts the centre of mass


@dataclass(frozen=True)
class AugmentParams:
    """Magnitudes at strength 1; `scaled(s)` multiplies them by s."""

    thickness_probability: float = 0.5
    rotation_degrees: float = 15.0
    slant: float = 0.3  # horizontal shear
    scale_low: float = 0.8
    scale_high: float = 1.15
    elastic_alpha: float = 1.5  # pixels of displacement
    crop_probability: float = 0.15
    crop_shift: float = 7.0  # pixels
    blur_probability: float = 0.3
    # A digit drawn small, or photographed far off, reaches the gateway as a few pixels,
    # which its resize blows up into soft, thick strokes: down to 7-14 px and back.
    low_resolution_probability: float = 0.25
    # Uneven light: a photo's paper darkens towards one side, and what the gateway keeps
    # of that shade widens its crop, so the digit comes out small. The digit is shrunk
    # into the frame first, as a photo holds more paper than digit.
    shading_probability: float = 0.3
    shading_amplitude: float = 0.5
    # Uploads are compressed and noisy at full size, then shrunk to 28x28, which averages
    # most of it away: at 28x28 both stay mild (quality 60-95, noise up to 5% of white).
    noise_std: float = 0.05
    jpeg_probability: float = 0.2
    gateway_probability: float = 0.8
    # A crossbar on 7s, a flag (and now and then a foot) on 1s: how much of the world writes
    # them, and MNIST's writers rarely did (trainer.augment.writing_conventions).
    conventions_probability: float = 0.4

    def scaled(self, strength: float) -> AugmentParams:
        """These magnitudes times `strength` (scale's range shrinks towards 1)."""
        s = float(strength)
        return AugmentParams(
            thickness_probability=self.thickness_probability * s,
            rotation_degrees=self.rotation_degrees * s,
            slant=self.slant * s,
            scale_low=1 - (1 - self.scale_low) * s,
            scale_high=1 + (self.scale_high - 1) * s,
            elastic_alpha=self.elastic_alpha * s,
            crop_probability=self.crop_probability * s,
            crop_shift=self.crop_shift * s,
            blur_probability=self.blur_probability * s,
            low_resolution_probability=self.low_resolution_probability * s,
            shading_probability=self.shading_probability * s,
            shading_amplitude=self.shading_amplitude * s,
            noise_std=self.noise_std * s,
            jpeg_probability=self.jpeg_probability * s,
            gateway_probability=self.gateway_probability * min(1.0, 2 * s),
            conventions_probability=self.conventions_probability * s,
        )


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    """`count` independent stateless seeds split from one."""
    import tensorflow as tf

    return list(tf.unstack(tf.random.experimental.stateless_split(seed, count)))


def tf_where_batch(mask: tf.Tensor, changed: tf.Tensor, original: tf.Tensor) -> tf.Tensor:
    """Per sample: `changed` where mask [B] is true, else `original` (both [B,28,28])."""
    import tensorflow as tf

    return tf.where(mask[:, None, None], changed, original)


def change_thickness(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """Dilate (thicker strokes) or erode (thinner) a random share of the digits, 2x2."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    draw = tf.random.stateless_uniform([batch], seed)
    x = images[..., None]
    dilated = tf.nn.max_pool2d(x, 2, 1, "SAME")[..., 0]
    eroded = -tf.nn.max_pool2d(-x, 2, 1, "SAME")[..., 0]
    out = tf_where_batch(draw < probability / 2, dilated, images)
    return tf_where_batch((draw >= probability / 2) & (draw < probability), eroded, out)


def _pixel_grid() -> tuple[tf.Tensor, tf.Tensor]:
    """Each pixel's row and column, float32 [28,28] each."""
    import tensorflow as tf

    index = tf.range(SIZE, dtype=tf.float32)
    return tuple(tf.meshgrid(index, index, indexing="ij"))


def _transform(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Apply per-sample projective transforms [B,8] (output -> input maps), bilinear."""
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images[..., None],
        transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.constant(IMAGE_SHAPE, tf.int32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )[..., 0]


def affine(images: tf.Tensor, seed: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """Rotate, slant (shear) and scale each digit about the centre."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2, s3 = _seeds(seed, 3)
    angle = tf.random.stateless_uniform([batch], s1, -1, 1) * math.radians(params.rotation_degrees)
    shear = tf.random.stateless_uniform([batch], s2, -params.slant, params.slant)
    scale = tf.random.stateless_uniform([batch], s3, params.scale_low, params.scale_high)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Forward map A = scale * R(angle) @ [[1, shear], [0, 1]]; the op wants the inverse
    # (output pixel -> input pixel), about the image centre c.
    a00, a01 = scale * cos, scale * (cos * shear - sin)
    a10, a11 = scale * sin, scale * (sin * shear + cos)
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    c = (SIZE - 1) / 2
    tx = c - (i00 * c + i01 * c)
    ty = c - (i10 * c + i11 * c)
    zeros = tf.zeros_like(angle)
    return _transform(images, tf.stack([i00, i01, tx, i10, i11, ty, zeros, zeros], axis=1))


def translate(images: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """Move each digit by (dx, dy) pixels [B]; what leaves the frame is lost."""
    import tensorflow as tf

    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    return _transform(images, tf.stack([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], 1))


def _bilinear_sample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """images [B,H,W] sampled at float coordinates [B,H,W]; outside the frame is 0."""
    import tensorflow as tf

    side = SIZE + 2  # a border of zeros to sample from
    # One flat gather per corner: `gather_nd` with batch dims costs twice as much here.
    padded = tf.reshape(tf.pad(images, [[0, 0], [1, 1], [1, 1]]), [-1])
    rows = tf.clip_by_value(rows + 1, 0, side - 1e-3)
    cols = tf.clip_by_value(cols + 1, 0, side - 1e-3)
    r0, c0 = tf.floor(rows), tf.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, side - 1), tf.minimum(c0 + 1, side - 1)
    base = (tf.range(tf.shape(images)[0]) * side * side)[:, None, None]

    def at(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        return tf.gather(padded, base + r * side + c)

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


ELASTIC_GRID = 4  # the displacement field's coarse grid, per side


def _upsampling_matrix() -> tf.Tensor:
    """[grid², 28²]: bicubic resizing of a coarse grid to 28x28, as one matrix.

    Resizing is linear, so resizing each basis image once gives the operator; a batch's
    fields are then one matrix product instead of a resize per image.
    """
    import tensorflow as tf

    cells = ELASTIC_GRID * ELASTIC_GRID
    basis = tf.reshape(tf.eye(cells), [cells, ELASTIC_GRID, ELASTIC_GRID, 1])
    return tf.reshape(tf.image.resize(basis, IMAGE_SHAPE, method="bicubic"), [cells, SIZE * SIZE])


def elastic(images: tf.Tensor, seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """Simard's elastic distortion: a smooth random field moves every pixel up to ~alpha px.

    The field is drawn on a coarse 4x4 grid and upsampled bicubically, which smooths it as
    the Gaussian filter of the original recipe does, for a fraction of the cost.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    cells = ELASTIC_GRID * ELASTIC_GRID
    coarse = tf.random.stateless_uniform([batch, cells, 2], seed, -1, 1)
    field = tf.einsum("bkc,kp->bpc", coarse, _upsampling_matrix()) * alpha
    field = tf.reshape(field, [batch, SIZE, SIZE, 2])
    grid_rows, grid_cols = _pixel_grid()
    return _bilinear_sample(images, grid_rows + field[..., 0], grid_cols + field[..., 1])


def _segments(starts: tf.Tensor, ends: tf.Tensor, half_width: tf.Tensor) -> tf.Tensor:
    """Soft pen strokes [B,28,28]: one straight segment per digit, (row, col) [B,2] to [B,2]."""
    import tensorflow as tf

    rows, cols = _pixel_grid()
    point = tf.stack([rows, cols], axis=-1)[None]  # [1,28,28,2]
    start, direction = starts[:, None, None, :], (ends - starts)[:, None, None, :]
    length2 = tf.maximum(tf.reduce_sum(direction**2, axis=-1), 1e-6)
    along = tf.clip_by_value(tf.reduce_sum((point - start) * direction, -1) / length2, 0, 1)
    distance = tf.norm(point - (start + along[..., None] * direction), axis=-1)
    # Full ink within the pen's half width, fading over one pixel, as MNIST's strokes do.
    return tf.clip_by_value(half_width[:, None, None] + 0.5 - distance, 0, 1)


def writing_conventions(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, probability: float
) -> tf.Tensor:
    """Write some 1s and 7s as much of the world does, which MNIST's American writers rarely do.

    A 7 gets a crossbar through its stem; a 1 gets the up-stroke (flag) at its top and,
    now and then, a foot. The strokes go on before every other step, so they are slanted,
    thickened and blurred with the rest of the digit.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2, s3, s4, s5 = _seeds(seed, 5)
    # Every draw is made for the whole batch (so a digit's strokes do not depend on which
    # others were chosen), then only the chosen digits, a few in a hundred, are drawn on.
    draw = tf.random.stateless_uniform([batch, 4], s1)
    half_width = tf.random.stateless_uniform([batch], s2, 0.6, 1.4)
    bar_height = tf.random.stateless_uniform([batch], s3, 0.5, 0.65)
    bar_half = tf.random.stateless_uniform([batch], s4, 3, 5.5)
    angle_length = tf.random.stateless_uniform([batch, 2], s5, [0.35, 4.0], [1.05, 8.0])
    labels = tf.cast(labels, tf.int32)
    index = tf.range(SIZE, dtype=tf.float32)
    rows_any = tf.reduce_any(images > 0.5, axis=2)
    chosen = (
        (draw[:, 0] < probability)
        & tf.reduce_any(rows_any, axis=1)
        & (tf.equal(labels, 1) | tf.equal(labels, 7))
    )
    where = tf.where(chosen)
    draw, half_width, bar_height, bar_half, angle_length, labels, rows_any, digits = (
        tf.gather_nd(tensor, where)
        for tensor in (
            draw,
            half_width,
            bar_height,
            bar_half,
            angle_length,
            labels,
            rows_any,
            images,
        )
    )
    ink = tf.cast(digits > 0.5, tf.float32)
    top = tf.reduce_min(tf.where(rows_any, index, float(SIZE)), axis=1)
    bottom = tf.reduce_max(tf.where(rows_any, index, -1.0), axis=1)

    def ink_column(row: tf.Tensor) -> tf.Tensor:
        """The mean column of the ink in each digit's `row` (rounded) and the rows beside it."""
        near = tf.cast(tf.abs(index[None, :] - tf.round(row)[:, None]) <= 1, tf.float32)
        weight = tf.reduce_sum(ink * near[:, :, None], axis=1)  # [K,28] columns
        total = tf.reduce_sum(weight, axis=1)
        return tf.where(total > 0, tf.reduce_sum(weight * index, 1) / tf.maximum(total, 1), 14.0)

    # 7: a crossbar a little below the middle of the stem, 3-5 px each side of it, rising
    # or falling up to a pixel over its length.
    bar_row = top + (bottom - top) * bar_height
    bar_col = ink_column(bar_row)
    tilt = (draw[:, 3] - 0.5) * 2
    # 1: a flag down and to the left of the stem's top, 4-8 px long at 20-60 degrees.
    top_col = ink_column(top + 1)
    angle, length = angle_length[:, 0], angle_length[:, 1]
    seven = tf.equal(labels, 7)[:, None]
    stroke = _segments(
        tf.where(
            seven, tf.stack([bar_row + tilt, bar_col - bar_half], 1), tf.stack([top, top_col], 1)
        ),
        tf.where(
            seven,
            tf.stack([bar_row - tilt, bar_col + bar_half], 1),
            tf.stack([top + length * tf.sin(angle), top_col - length * tf.cos(angle)], 1),
        ),
        half_width,
    )
    bottom_col = ink_column(bottom - 1)
    foot = _segments(
        tf.stack([bottom, bottom_col - bar_half], 1),
        tf.stack([bottom, bottom_col + bar_half], 1),
        half_width,
    )
    drawn = tf.maximum(digits, stroke)
    # A 1 gets a foot now and then, under its flag.
    footed = tf.equal(labels, 1) & (draw[:, 1] < 0.35)
    drawn = tf_where_batch(footed, tf.maximum(drawn, foot), drawn)
    return tf.tensor_scatter_nd_update(images, where, drawn)


def off_centre_crop(images: tf.Tensor, seed: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """For a share of the digits, a frame so off-centre that it may cut a sliver off."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2 = _seeds(seed, 2)
    shift = tf.random.stateless_uniform([batch, 2], s1, -1, 1) * params.crop_shift
    moved = translate(images, shift[:, 0], shift[:, 1])
    chosen = tf.random.stateless_uniform([batch], s2) < params.crop_probability
    # Never crop a digit away: keep the move only where most of the ink survives.
    kept = tf.reduce_sum(moved, [1, 2]) > 0.8 * tf.reduce_sum(images, [1, 2])
    return tf_where_batch(chosen & kept, moved, images)


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """A separable Gaussian blur of the whole batch."""
    import tensorflow as tf

    radius = max(1, math.ceil(2.5 * sigma))
    taps = tf.exp(-(tf.range(-radius, radius + 1, dtype=tf.float32) ** 2) / (2 * sigma**2))
    taps = taps / tf.reduce_sum(taps)
    x = images[..., None]
    x = tf.nn.conv2d(x, tf.reshape(taps, [-1, 1, 1, 1]), 1, "SAME")
    x = tf.nn.conv2d(x, tf.reshape(taps, [1, -1, 1, 1]), 1, "SAME")
    return x[..., 0]


def low_resolution(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """For a share of the digits, a coarse copy: area-averaged down to 7-14 px, bicubic back."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2 = _seeds(seed, 2)
    # One size per batch (resize takes one size), a different one every batch.
    size = tf.random.stateless_uniform([], s1, 7, 15, dtype=tf.int32)
    coarse = tf.image.resize(images[..., None], [size, size], method="area")
    back = tf.clip_by_value(tf.image.resize(coarse, IMAGE_SHAPE, method="bicubic")[..., 0], 0, 1)
    chosen = tf.random.stateless_uniform([batch], s2) < probability
    return tf_where_batch(chosen, back, images)


def shading(images: tf.Tensor, seed: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """For a share of the digits: shrunk into more paper, under a lighting gradient."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2, s3, s4, s5 = _seeds(seed, 5)
    scale = tf.random.stateless_uniform([batch], s1, 0.45, 0.9)
    room = (1 - scale) * (SIZE - 1)
    offset = tf.random.stateless_uniform([batch, 2], s2) * room[:, None]
    zeros = tf.zeros_like(scale)
    # Output pixel p samples input (p - offset) / scale.
    small = _transform(
        images,
        tf.stack(
            [1 / scale, zeros, -offset[:, 0] / scale, zeros, 1 / scale, -offset[:, 1] / scale,
             zeros, zeros],
            axis=1,
        ),
    )  # fmt: skip
    angle = tf.random.stateless_uniform([batch, 1, 1], s3, 0, 2 * math.pi)
    rows, cols = _pixel_grid()
    ramp = tf.cos(angle) * cols / SIZE + tf.sin(angle) * rows / SIZE
    ramp = ramp - tf.reduce_min(ramp, axis=[1, 2], keepdims=True)
    amplitude = tf.random.stateless_uniform([batch, 1, 1], s4, 0, params.shading_amplitude)
    shaded = tf.clip_by_value(small + ramp * amplitude, 0, 1)
    chosen = tf.random.stateless_uniform([batch], s5) < params.shading_probability
    return tf_where_batch(chosen, shaded, images)


def photo_artefacts(images: tf.Tensor, seed: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """Blur, sensor noise and JPEG compression, each on a random share of the digits."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    s1, s2, s3, s4, s5 = _seeds(seed, 5)
    draw = tf.random.stateless_uniform([batch], s1)
    out = tf_where_batch(draw < params.blur_probability / 2, gaussian_blur(images, 0.6), images)
    out = tf_where_batch(
        (draw >= params.blur_probability / 2) & (draw < params.blur_probability),
        gaussian_blur(images, 1.0),
        out,
    )
    if params.noise_std > 0:
        std = tf.random.stateless_uniform([batch, 1, 1], s2, 0, params.noise_std)
        out = out + tf.random.stateless_normal(tf.shape(out), s3) * std
    out = tf.clip_by_value(out, 0.0, 1.0)
    if params.jpeg_probability > 0:
        qualities = tf.random.stateless_uniform([batch], s4, 60, 95, dtype=tf.int32)

        def compress(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            image, quality = args
            return tf.image.adjust_jpeg_quality(image[..., None], quality)[..., 0]

        chosen = tf.random.stateless_uniform([batch], s5) < params.jpeg_probability
        # Only the chosen digits go through the codec: it is the costliest step per image.
        where = tf.where(chosen)
        compressed = tf.map_fn(
            compress,
            (tf.gather_nd(out, where), tf.gather_nd(qualities, where)),
            fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.float32),
        )
        out = tf.tensor_scatter_nd_update(out, where, compressed)
    return out


def otsu_thresholds(values: tf.Tensor) -> tf.Tensor:
    """Otsu's threshold of each row of `values` [B,N] in 0-255 (gateway.preprocessing's)."""
    import tensorflow as tf

    levels = tf.range(256, dtype=tf.float32)
    quantized = tf.cast(tf.clip_by_value(values, 0, 255), tf.int32)
    histogram = tf.cast(
        tf.math.bincount(quantized, minlength=256, maxlength=256, axis=-1), tf.float32
    )
    weight_low = tf.cumsum(histogram, axis=1)
    weight_high = weight_low[:, -1:] - weight_low
    mass_low = tf.cumsum(histogram * levels, axis=1)
    mean_low = mass_low / tf.maximum(weight_low, 1)
    mean_high = (mass_low[:, -1:] - mass_low) / tf.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return tf.cast(tf.argmax(between, axis=1), tf.float32)


def simulate_gateway(images: tf.Tensor) -> tf.Tensor:
    """What `gateway.preprocessing.prepare_image` makes of a digit, as batch ops.

    The same steps in the same order: background removal (the median level off, scaled to
    the peak, Otsu's threshold, pixels below half of it dropped, the 90th percentile of the
    strokes stretched to white), crop to the ink, longer side scaled to 20 px (aspect
    kept; bilinear where the gateway uses Lanczos), centre of mass moved to (14, 14).
    """
    import tensorflow as tf

    pixels = SIZE * SIZE
    flat = tf.reshape(images, [-1, pixels]) * 255.0
    median = tf.sort(flat, axis=1)[:, pixels // 2]
    lifted = tf.nn.relu(flat - median[:, None])
    peak = tf.reduce_max(lifted, axis=1, keepdims=True)
    scaled = lifted * (255.0 / tf.maximum(peak, 1e-6))
    threshold = otsu_thresholds(scaled)[:, None]
    cleaned = tf.where(scaled > threshold / 2, scaled, 0.0)
    strokes = scaled > threshold
    ranked = tf.sort(tf.where(strokes, cleaned, 0.0), axis=1, direction="DESCENDING")
    count = tf.reduce_sum(tf.cast(strokes, tf.int32), axis=1)
    top = tf.gather(ranked, count // 10, batch_dims=1)[:, None]  # the 90th percentile
    cleaned = tf.clip_by_value(cleaned / tf.maximum(top, 1.0), 0, 1)
    cleaned = tf.reshape(cleaned, [-1, SIZE, SIZE])

    ink = cleaned > 0
    rows_any, cols_any = tf.reduce_any(ink, axis=2), tf.reduce_any(ink, axis=1)
    index = tf.range(SIZE, dtype=tf.float32)
    big = float(SIZE)

    def bounds(any_: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        first = tf.reduce_min(tf.where(any_, index, big), axis=1)
        last = tf.reduce_max(tf.where(any_, index, -1.0), axis=1)
        return first, last

    top_row, bottom = bounds(rows_any)
    left, right = bounds(cols_any)
    # No ink or no contrast: the gateway would answer 422; keep the digit as it was.
    empty = (top_row > bottom) | (peak[:, 0] < 1e-3)
    top_row, bottom = tf.where(empty, 0.0, top_row), tf.where(empty, big - 1, bottom)
    left, right = tf.where(empty, 0.0, left), tf.where(empty, big - 1, right)
    # A square box around the ink, side = its longer side: resized to 20x20, the ink's
    # longer side spans 20 px and its aspect is kept, as fit_to_box does.
    side = tf.maximum(bottom - top_row, right - left) + 1
    centre_row, centre_col = (top_row + bottom) / 2, (left + right) / 2
    half = (side - 1) / 2
    denominator = big - 1
    boxes = tf.stack(
        [
            (centre_row - half) / denominator,
            (centre_col - half) / denominator,
            (centre_row + half) / denominator,
            (centre_col + half) / denominator,
        ],
        axis=1,
    )
    batch = tf.shape(images)[0]
    digits = tf.image.crop_and_resize(
        cleaned[..., None], boxes, tf.range(batch), [DIGIT_BOX, DIGIT_BOX], extrapolation_value=0
    )[..., 0]
    margin = (SIZE - DIGIT_BOX) // 2
    canvas = tf.pad(digits, [[0, 0], [margin, margin], [margin, margin]])
    mass = tf.maximum(tf.reduce_sum(canvas, [1, 2]), 1e-6)
    com_row = tf.reduce_sum(canvas * index[None, :, None], [1, 2]) / mass
    com_col = tf.reduce_sum(canvas * index[None, None, :], [1, 2]) / mass
    centred = translate(canvas, tf.round(CENTRE - com_col), tf.round(CENTRE - com_row))
    return tf_where_batch(empty, images, centred)


def augment_batch(
    images: tf.Tensor,
    seed: tf.Tensor,
    strength: float,
    params: AugmentParams | None = None,
    labels: tf.Tensor | None = None,
) -> tf.Tensor:
    """The whole upload augmentation on one batch [B,28,28]; `seed` is int32/int64 [2].

    `labels` [B] (when given) let the writing conventions change the digits they apply to.
    """
    import tensorflow as tf

    if strength <= 0:
        return images
    p = (params or AugmentParams()).scaled(strength)
    seeds = _seeds(tf.cast(seed, tf.int64), 9)
    x = images
    if labels is not None and p.conventions_probability > 0:
        x = writing_conventions(x, labels, seeds[8], p.conventions_probability)
    x = change_thickness(x, seeds[0], p.thickness_probability)
    x = affine(x, seeds[1], p)
    x = elastic(x, seeds[2], p.elastic_alpha)
    x = off_centre_crop(x, seeds[3], p)
    x = low_resolution(x, seeds[6], p.low_resolution_probability)
    x = shading(x, seeds[7], p)
    x = photo_artefacts(x, seeds[4], p)
    through_gateway = tf.random.stateless_uniform([tf.shape(x)[0]], seeds[5]) < (
        p.gateway_probability
    )
    x = tf_where_batch(through_gateway, simulate_gateway(x), x)
    return tf.clip_by_value(x, 0.0, 1.0)
