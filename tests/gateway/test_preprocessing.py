"""Golden tests of the image pipeline: made-here images with known answers.

Model-free checks pin each step (polarity, cropping, aspect ratio, centring, EXIF,
alpha, errors); the classification checks ask the real fixture model to read printed
and "photographed" digits at stated rates.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gateway.errors import (
    InvalidInputError,
    NoInkError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gateway.preprocessing import prepare_image
from tests.gateway.images import FONTS, encode, photographed_mnist, printed_digit


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def bar_image(width: int, height: int, *, dark_on_light: bool, offset=(0, 0)) -> Image.Image:
    """A tall bar (a "1") somewhere off-centre on a big canvas."""
    paper, ink = (240, 20) if dark_on_light else (0, 255)
    canvas = Image.new("L", (400, 300), paper)
    left, top = 60 + offset[0], 40 + offset[1]
    ImageDraw.Draw(canvas).rectangle([left, top, left + width, top + height], fill=ink)
    return canvas


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_output_follows_the_mnist_recipe(dark_on_light: bool) -> None:
    result = prepare_image(encode(bar_image(40, 200, dark_on_light=dark_on_light)))

    assert result.shape == (28, 28) and result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() <= 1.0
    # Light ink on black, whatever the input's polarity.
    assert result[0, 0] == 0.0 and result.max() == pytest.approx(1.0)
    height, width = ink_box(result > 0.05)
    assert height == 20, "the longer side is scaled to 20 px"
    assert 3 <= width <= 6, "the aspect ratio is kept (40x200 -> about 4x20)"
    row, col = centre_of_mass(result)
    assert abs(row - 14) <= 0.6 and abs(col - 14) <= 0.6


def test_position_on_the_page_does_not_matter() -> None:
    here = prepare_image(encode(bar_image(40, 200, dark_on_light=True)))
    there = prepare_image(encode(bar_image(40, 200, dark_on_light=True, offset=(250, 50))))
    np.testing.assert_allclose(here, there, atol=1e-5)


def test_mnist_digit_round_trips_through_png(mnist_test_images) -> None:
    images, _ = mnist_test_images
    for image in images[:20]:
        result = prepare_image(encode(Image.fromarray(image.astype(np.uint8))))
        original = image / 255.0
        # Already MNIST-shaped, so the pipeline must leave it nearly as it was.
        assert np.corrcoef(result.ravel(), original.ravel())[0, 1] > 0.97
        assert np.abs(result - original).mean() < 0.03


def test_photographed_mnist_digit_looks_like_the_original(mnist_test_images) -> None:
    images, _ = mnist_test_images
    correlations = [
        np.corrcoef(
            prepare_image(photographed_mnist(image, scale=6, angle=0, quality=80, seed=i)).ravel(),
            (image / 255.0).ravel(),
        )[0, 1]
        for i, image in enumerate(images[:20])
    ]
    assert np.median(correlations) > 0.8


def test_transparent_canvas_png_is_read_as_ink_on_white() -> None:
    strokes = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).line([(100, 30), (100, 170)], fill=(0, 0, 0, 255), width=14)
    on_white = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(on_white).line([(100, 30), (100, 170)], fill=0, width=14)

    np.testing.assert_allclose(
        prepare_image(encode(strokes)), prepare_image(encode(on_white)), atol=1e-5
    )


def test_exif_orientation_is_applied() -> None:
    upright = bar_image(200, 40, dark_on_light=True)  # a wide bar
    # A camera stores the sensor's pixels (here turned 90 degrees) plus an Orientation tag;
    # 6 means "rotate 90 degrees clockwise to display".
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())

    result = prepare_image(buffer.getvalue())
    height, width = ink_box(result > 0.05)
    assert width == 20 and height < 8, "the bar is wide again after EXIF rotation"


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (100, 100), 255),
        Image.new("L", (100, 100), 0),
        Image.fromarray(np.random.default_rng(0).integers(120, 135, (100, 100), dtype=np.uint8)),
    ],
    ids=["white", "black", "faint-noise"],
)
def test_image_without_ink_is_refused(image: Image.Image) -> None:
    with pytest.raises(NoInkError, match="no digit"):
        prepare_image(encode(image))


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError, match="pixels"):
        prepare_image(encode(Image.new("L", (200, 200), 255)), max_pixels=10_000)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not an image at all", InvalidInputError),
        (b"", InvalidInputError),
        (encode(Image.new("L", (64, 64), 128))[:60], InvalidInputError),
        (encode(Image.new("L", (64, 64), 128), "TIFF"), UnsupportedMediaTypeError),
    ],
    ids=["garbage", "empty", "truncated-png", "tiff"],
)
def test_undecodable_or_unsupported_images(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        prepare_image(data)


@pytest.mark.slow
def test_model_reads_photographed_mnist_digits(mnist_test_images, classify_digits) -> None:
    """Real MNIST digits, upscaled 4-12x, on paper, rotated up to 15 degrees, JPEG 30-90.

    Stated rate: at least 75% correct, and within 15 points of the pristine digits.
    """
    images, labels = mnist_test_images
    images, labels = images[:60], labels[:60]
    pristine = (classify_digits(images / 255.0) == labels).mean()
    variants = [(4, 0, 90), (8, 10, 50), (12, -15, 30), (6, 5, 70)]
    correct = []
    for scale, angle, quality in variants:
        batch = np.stack(
            [
                prepare_image(photographed_mnist(image, scale, angle, quality, seed=i))
                for i, image in enumerate(images)
            ]
        )
        correct.append(classify_digits(batch) == labels)
    rate = float(np.mean(correct))
    assert rate >= 0.75, f"photographed digits read at {rate:.0%}"
    assert rate >= pristine - 0.15, f"{rate:.0%} vs {pristine:.0%} on pristine digits"


@pytest.mark.slow
def test_model_reads_printed_digits(classify_digits) -> None:
    """Digits printed in 4 DejaVu fonts, 40-250 px, rotated up to 12 degrees, JPEG 30-90.

    Stated rate: at least 45% (chance is 10%). The fixture model is an MLP trained for a
    few epochs on 4,000 handwritten digits; printed glyphs (a closed 4, a serif 1) are
    outside what it learned, so this checks the pipeline, not the model's reach.
    """
    variants = [(40, 0, 90), (120, 10, 50), (250, -12, 30)]
    batch, labels = [], []
    for font in FONTS:
        for size, angle, quality in variants:
            for digit in range(10):
                batch.append(prepare_image(printed_digit(digit, font, size, angle, quality)))
                labels.append(digit)
    rate = float((classify_digits(np.stack(batch)) == np.array(labels)).mean())
    assert rate >= 0.45, f"printed digits read at {rate:.0%}"


@pytest.mark.parametrize("size", [(200, 200), (1200, 900)], ids=["small", "shrunk"])
def test_a_16_bit_image_reads_as_its_8_bit_original(size: tuple[int, int]) -> None:
    """Issue 15 #12: 16->8-bit conversion clipped at 255, so grey ink turned white."""
    width, height = size
    original = Image.new("L", size, 200)  # grey paper, grey ink: a pencil on a scan
    ImageDraw.Draw(original).line(
        [(width // 2, height // 8), (width // 2, 7 * height // 8)], fill=90, width=width // 12
    )
    sixteen_bit = Image.fromarray(np.asarray(original).astype(np.uint16) * 257)
    assert sixteen_bit.mode == "I;16"

    np.testing.assert_array_equal(
        prepare_image(encode(sixteen_bit)), prepare_image(encode(original))
    )


def test_a_large_jpeg_is_decoded_at_a_reduced_scale() -> None:
    from gateway.preprocessing import WORKING_SIZE, decode_image

    photo = Image.new("L", (4096, 3072), 230)
    decoded = decode_image(encode(photo, "JPEG"), max_pixels=4_000_000)
    assert WORKING_SIZE <= max(decoded.size) <= 2 * WORKING_SIZE
