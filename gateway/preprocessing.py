"""Turn what users upload (photos, scans, canvas PNGs) into MNIST's input.

The recipe is the one MNIST itself was made with: light ink on a dark background, the
digit scaled so its longer side is 20 px, pasted into 28x28 with its centre of mass at
the centre. `prepare_image` is the whole pipeline; each step is its own function so the
golden tests can pin them down.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from gateway.errors import (
    InvalidInputError,
    NoInkError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "MPO"}
MNIST_SIZE = 28
DIGIT_BOX = 20
# Ink detection works on a copy whose longer side is at most this: a 20 px digit needs no
# more, and it bounds the cost of a 12-megapixel phone photo.
WORKING_SIZE = 512
# Below this contrast (0-255) between ink and paper, there is no digit to read.
MIN_INK_CONTRAST = 40.0
MIN_INK_PIXELS = 4
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# EXIF Orientation -> the transpose that displays the stored pixels upright.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode image bytes with Pillow; refuse unknown formats and decompression bombs.

    The size is checked from the header before any pixel is decoded. JPEGs are decoded at
    the smallest scale (1/2, 1/4, 1/8) that still covers WORKING_SIZE, and that is the size
    checked, so a phone photo costs what its reduced size costs.
    """
    if not data:
        raise InvalidInputError("the image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between 1x and 2x its own global limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise UnsupportedMediaTypeError(
                    f"image format {image.format} is not accepted; send PNG, JPEG, WebP, BMP or GIF"
                )
            if image.format in ("JPEG", "MPO"):
                image.draft(image.mode, (WORKING_SIZE, WORKING_SIZE))
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLargeError(
                    f"the image is {width}x{height} = {width * height:,} pixels, over the "
                    f"limit of {max_pixels:,} pixels (GATEWAY_MAX_IMAGE_PIXELS); a digit needs "
                    "far fewer: scale the image down before sending it"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(f"the image has too many pixels: {error}") from None
    except UnidentifiedImageError:
        raise InvalidInputError(
            "the image cannot be decoded; send a PNG, JPEG, WebP, BMP or GIF file"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(f"the image is corrupt or truncated: {error}") from None
    return image


def shrink(image: Image.Image) -> Image.Image:
    """Scale down (BOX) so the longer side is at most WORKING_SIZE; alpha is premultiplied."""
    if max(image.size) <= WORKING_SIZE:
        return image
    image = image.copy()
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Shrink, flatten alpha onto white, apply EXIF orientation; return float32 gray 0-255.

    Shrinking comes first, so the copies the other steps make are small whatever the
    upload's size. 16-bit grayscale is scaled to 0-255, never clipped.
    """
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if image.mode in SIXTEEN_BIT_MODES:
        # convert("L") clips at 255 instead of scaling: grey 16-bit ink would turn white.
        # Scaled and rounded to 8 bits, an image that was 8-bit gives back its own levels.
        levels = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = shrink(image.convert("RGBA"))
        # A canvas PNG is strokes on transparency: transparent means paper, i.e. white.
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        gray = Image.alpha_composite(white, rgba).convert("L")
    else:
        gray = shrink(image.convert("L"))
    if orientation in EXIF_TRANSPOSE:
        gray = gray.transpose(EXIF_TRANSPOSE[orientation])
    return np.asarray(gray, dtype=np.float32)


def to_light_on_dark(gray: np.ndarray) -> np.ndarray:
    """Invert dark ink on light paper into MNIST's light-on-dark; leave MNIST-like input."""
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    # The border is almost all paper, so its median is the paper's brightness.
    if np.median(border) > 127.5:
        return 255.0 - gray
    return gray


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold over 0-255 values: the split that best separates two classes."""
    histogram = np.bincount(np.clip(values, 0, 255).astype(np.uint8).ravel(), minlength=256)
    histogram = histogram.astype(np.float64)
    total = histogram.sum()
    levels = np.arange(256, dtype=np.float64)
    weight_low = np.cumsum(histogram)
    weight_high = total - weight_low
    mass_low = np.cumsum(histogram * levels)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(np.argmax(between))


def suppress_background(ink: np.ndarray) -> np.ndarray:
    """Remove the paper's level, grain and JPEG noise; stretch the ink to 0-255.

    Raises NoInkError when nothing stands out from the background.
    """
    # The paper covers most of the picture, so the median is its level after inversion.
    lifted = np.clip(ink - np.median(ink), 0, None)
    peak = float(lifted.max())
    if peak < MIN_INK_CONTRAST:
        raise NoInkError(
            "no digit found: the image has no ink that stands out from the background "
            f"(contrast {peak:.0f} of 255, need {MIN_INK_CONTRAST:.0f})"
        )
    scaled = lifted * (255.0 / peak)
    threshold = otsu_threshold(scaled)
    strokes = scaled > threshold
    if int(strokes.sum()) < MIN_INK_PIXELS:
        raise NoInkError("no digit found: too few ink pixels in the image")
    # Keep anti-aliased stroke edges (half the threshold), drop the rest as background.
    cleaned = np.where(scaled > threshold / 2, scaled, 0.0)
    # Normalise so the bulk of the stroke is full white, as in MNIST.
    top = float(np.percentile(cleaned[strokes], 90))
    return np.clip(cleaned * (255.0 / max(top, 1.0)), 0, 255)


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """Crop to the bounding box of the non-zero pixels."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise NoInkError("no digit found: the image is blank after background removal")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_to_box(ink: np.ndarray, box: int = DIGIT_BOX) -> np.ndarray:
    """Scale so the longer side is `box` px, keeping the aspect ratio (anti-aliased)."""
    height, width = ink.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(ink.astype(np.float32), mode="F")
    resized = image.resize(new_size, Image.Resampling.LANCZOS if scale < 1 else Image.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 255)


def center_by_mass(digit: np.ndarray, size: int = MNIST_SIZE) -> np.ndarray:
    """Paste into size x size so the centre of mass lands on pixel (14, 14).

    (14, 14), not the geometric 13.5: it is where MNIST's own digits have it (measured
    mean 14.00 +- 0.28 on the test set), and the model learned that position.
    """
    height, width = digit.shape
    total = float(digit.sum())
    rows, cols = np.indices(digit.shape)
    com_row = float((rows * digit).sum() / total) if total else (height - 1) / 2
    com_col = float((cols * digit).sum() / total) if total else (width - 1) / 2
    # Shift so the COM sits at the middle, but never push the digit off the canvas.
    top = int(np.clip(round(size // 2 - com_row), 0, size - height))
    left = int(np.clip(round(size // 2 - com_col), 0, size - width))
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def prepare_image(data: bytes, max_pixels: int = 4_000_000) -> np.ndarray:
    """Image bytes -> float32 [28, 28] in [0, 1], light digit on black, MNIST-style."""
    image = decode_image(data, max_pixels)
    ink = to_light_on_dark(to_grayscale(image))
    digit = fit_to_box(crop_to_ink(suppress_background(ink)))
    return center_by_mass(digit) / 255.0
