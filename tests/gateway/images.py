"""Test images made here: printed digits and real MNIST digits photographed-style.

Digits are rendered dark on light paper (as a phone photo or a scan would show them),
rotated, scaled and saved as JPEG at several qualities, so the preprocessing has to undo
exactly what users' pictures do to a digit.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf"]


def load_font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A DejaVu font if installed, else Pillow's built-in scalable default font."""
    path = FONT_DIR / name
    if path.exists():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def paper(size: tuple[int, int], level: int, seed: int) -> Image.Image:
    """Light paper with grain and a lighting gradient, like a phone photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.linspace(-12, 12, width)[np.newaxis, :] + np.zeros((height, 1))
    grain = rng.normal(0, 4, (height, width))
    return Image.fromarray(np.clip(level + gradient + grain, 0, 255).astype(np.uint8), "L")


def printed_digit(
    digit: int, font: str, size: int, angle: float, quality: int, seed: int = 0
) -> bytes:
    """A printed digit, dark ink on light paper, rotated, as JPEG bytes."""
    canvas = paper((int(size * 1.6), int(size * 1.6)), level=225, seed=seed)
    draw = ImageDraw.Draw(canvas)
    glyph = load_font(font, size)
    draw.text((canvas.width / 2, canvas.height / 2), str(digit), fill=35, font=glyph, anchor="mm")
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=225)
    return encode(canvas.filter(ImageFilter.GaussianBlur(size / 80)), "JPEG", quality=quality)


def photographed_mnist(
    image: np.ndarray, scale: int, angle: float, quality: int, seed: int = 0, fmt: str = "JPEG"
) -> bytes:
    """A real MNIST digit upscaled, inverted to dark-on-light, on paper, rotated, as JPEG
    (`quality`) or another format Pillow writes."""
    side = 28 * scale
    ink = Image.fromarray(image.astype(np.uint8), "L").resize((side, side), Image.BICUBIC)
    ink = ink.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=0)
    margin = side // 2
    sheet = paper((side + 2 * margin, side + 2 * margin), level=220, seed=seed)
    ink_array = np.zeros((sheet.height, sheet.width), dtype=np.float32)
    ink_array[margin : margin + side, margin : margin + side] = np.asarray(ink, np.float32)
    # Ink darkens the paper in proportion to its strength (pen at ~30 of 255).
    darkened = np.asarray(sheet, np.float32) * (1 - ink_array / 255 * 0.85)
    photo = Image.fromarray(np.clip(darkened, 0, 255).astype(np.uint8), "L")
    return encode(photo, fmt, **({"quality": quality} if fmt == "JPEG" else {}))


def white_webp(side: int) -> bytes:
    """All white but one stroke: a few KB of WebP, side x side pixels once decoded."""
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line([(side // 2, side // 5), (side // 2, 4 * side // 5)], 0, side // 40)
    return encode(image, "WEBP", lossless=True, quality=100, method=0)


def transparent_png(side: int) -> bytes:
    """A canvas PNG: RGBA, transparent but one stroke; 4 bytes a pixel once decoded."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    stroke = (0, 0, 0, 255)
    ImageDraw.Draw(image).line([(side // 3, side // 5), (side // 2, 4 * side // 5)], stroke, 20)
    return encode(image, "PNG", optimize=True)
