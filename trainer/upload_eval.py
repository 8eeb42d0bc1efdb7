"""The upload-like evaluation set: what people send, through the gateway's own preprocessing.

Two parts, both generated here, deterministically, with no network:

- **printed**: digits rendered with fonts, photographed as uploads are: varied size,
  position and rotation, paper texture, a lighting gradient, blur, sent as PNG or JPEG;
- **handwriting**: scikit-learn's bundled 8x8 UCI digits (`load_digits`), handwriting from
  other writers than MNIST's, upscaled and rendered dark ink on light paper as a scan is.

Every image is encoded to bytes and passed through `gateway.preprocessing.prepare_image`,
the function the gateway runs on an upload, so the model sees what it would see in
production. The fonts are pinned: `EVAL_FONTS` for evaluation, `TRAIN_FONTS` for the
printed digits training may mix in (`trainer.augment`), never the same file. The
handwriting is for evaluation only: nothing in the trainer trains or augments with it.

TensorFlow-free, like the gateway: it imports Pillow, NumPy, matplotlib (for its bundled
fonts) and scikit-learn.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import DEFAULT_CACHE_DIR
from trainer.data import NUM_CLASSES

log = logging.getLogger(__name__)

# The set's seed and size are part of its identity (`EVAL_SET_ID`): change one and the
# figures of older versions no longer compare, which the quality gate checks.
EVAL_SEED = 20_2026
PRINTED_VARIANTS_PER_DIGIT = 8  # per font: 8 fonts x 10 digits x 8 = 640 images
EVAL_SET_ID = f"upload-eval-v1-seed{EVAL_SEED}"

# matplotlib ships these, at the version constraints/constraints.txt pins, so the
# evaluation set is the same on every machine and in the trainer image (which has no
# system fonts). Families unlike the training fonts: a Times-like serif (STIX), Computer
# Modern's sans and typewriter, and a monospace.
EVAL_FONTS = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
# Fonts training may use. matplotlib's are always there; the system's (Debian's
# fonts-dejavu-core and -extra) widen the mix where installed and are skipped elsewhere.
TRAIN_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "DejaVuSans-ExtraLight.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansCondensed-Oblique.ttf",
    "DejaVuSerifCondensed.ttf",
    "DejaVuSerifCondensed-Bold.ttf",
    "DejaVuSerifCondensed-Italic.ttf",
    "DejaVuMathTeXGyre.ttf",
    # Handwriting fonts (below): digits as a few more people write them.
    "Caveat[wght].ttf",
    "IndieFlower-Regular.ttf",
    "Kalam-Light.ttf",
    "Kalam-Regular.ttf",
    "Kalam-Bold.ttf",
    "PermanentMarker-Regular.ttf",
    "ShadowsIntoLight.ttf",
    "Zeyada.ttf",
)
# Google Fonts' handwriting faces, each drawn from one person's hand, as the PyPI packages
# of the trainer extra ship them (`<package>/files/*.ttf`, no download at run time). MNIST
# has 250 writers, the offline sample far fewer; these add hands that write a 1 with a
# flag, an open 4 or a marker's thick stroke, which the UCI handwriting has and MNIST
# rarely. Training only: the evaluation handwriting stays the UCI digits, and none of
# these is an evaluation font.
HANDWRITING_FONT_PACKAGES = (
    "fontpkg_caveat",
    "fontpkg_indie_flower",
    "fontpkg_kalam",
    "fontpkg_permanent_marker",
    "fontpkg_shadows_into_light",
    "fontpkg_zeyada",
)
SYSTEM_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
PNG, JPEG = "PNG", "JPEG"
CACHE_DIR_ENV = "TRAINER_CACHE_DIR"
MAX_RENDER_ATTEMPTS = 5


class FontMissingError(RuntimeError):
    """A pinned evaluation font is not installed (matplotlib changed its bundled fonts)."""


def matplotlib_font_dir() -> Path:
    """The directory of matplotlib's bundled TrueType fonts."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def handwriting_font_dirs() -> list[Path]:
    """The font directories of the installed HANDWRITING_FONT_PACKAGES (without importing them)."""
    directories = []
    for package in HANDWRITING_FONT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            directories.append(Path(spec.origin).parent / "files")
    return directories


@functools.lru_cache(maxsize=1)
def _font_index() -> dict[str, Path]:
    """File name -> path of every font found; matplotlib's win over the others."""
    index: dict[str, Path] = {}
    for directory in (*SYSTEM_FONT_DIRS, *handwriting_font_dirs()):
        if directory.is_dir():
            index.update({path.name: path for path in sorted(directory.rglob("*.ttf"))})
    index.update({path.name: path for path in sorted(matplotlib_font_dir().glob("*.ttf"))})
    return index


def find_fonts(names: tuple[str, ...], *, required: bool) -> list[Path]:
    """Paths of the named font files; a missing one is an error when `required`."""
    index = _font_index()
    missing = [name for name in names if name not in index]
    if missing and required:
        raise FontMissingError(
            f"evaluation fonts not found: {missing} (matplotlib's bundled fonts, "
            f"{matplotlib_font_dir()})"
        )
    if missing:
        log.info("training fonts not installed, left out of the mix: %s", missing)
    return [index[name] for name in names if name in index]


# --- rendering ----------------------------------------------------------------------------------


def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Paper as a phone sees it: a level, a lighting gradient, blotches and grain (0-255)."""
    level = rng.uniform(185, 250)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * cols / width + np.sin(angle) * rows / height) - 0.5
    gradient = ramp * rng.uniform(0, 40)
    coarse = rng.normal(0, rng.uniform(0, 5), (4, 4)).astype(np.float32)
    from PIL import Image

    blotches = np.asarray(
        Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    )
    grain = rng.normal(0, rng.uniform(1, 6), (height, width))
    return level + gradient + blotches + grain


def _encode(gray: np.ndarray, image_format: str, rng: np.random.Generator) -> bytes:
    """8-bit grey pixels -> PNG or JPEG bytes (JPEG at a random quality, as phones vary)."""
    from PIL import Image

    image = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    if image_format == JPEG:
        image.convert("RGB").save(buffer, JPEG, quality=int(rng.integers(35, 92)))
    else:
        image.save(buffer, PNG, compress_level=1)  # the gateway reads any level; 1 is fast
    return buffer.getvalue()


def render_printed_digit(
    font_path: Path, digit: int, rng: np.random.Generator, image_format: str = PNG
) -> bytes:
    """One printed digit photographed on paper: random size, place, tilt, light, blur."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(56, 200))
    height, width = size, int(size * rng.uniform(0.8, 1.4))
    font_px = int(size * rng.uniform(0.4, 0.75))
    font = ImageFont.truetype(str(font_path), font_px)
    # Ink drawn white on black, then tilted and placed: a mask of the glyph.
    left, top, right, bottom = font.getbbox(str(digit))
    glyph = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(glyph).text((4 - left, 4 - top), str(digit), fill=255, font=font)
    glyph = glyph.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True)
    mask = Image.new("L", (width, height), 0)
    room_x, room_y = max(0, width - glyph.width), max(0, height - glyph.height)
    # Off-centre, as people frame photos, but never cut (a cut digit is another digit).
    mask.paste(glyph, (int(rng.integers(0, room_x + 1)), int(rng.integers(0, room_y + 1))))
    blur = float(rng.choice([0.0, 0.0, 0.6, 1.2, 2.0])) * size / 100
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    ink = np.asarray(mask, dtype=np.float32) / 255.0
    paper = _paper(rng, height, width)
    ink_level = rng.uniform(0, 70)
    gray = paper * (1 - ink) + ink_level * ink
    return _encode(gray, image_format, rng)


def render_scanned_digit(pixels_8x8: np.ndarray, rng: np.random.Generator) -> bytes:
    """A UCI 8x8 digit (0-16, ink high) upscaled smoothly to dark ink on light paper, PNG."""
    from PIL import Image

    size = int(rng.integers(64, 129))
    ink = Image.fromarray((pixels_8x8 / 16.0).astype(np.float32), mode="F")
    # Bicubic from 8x8 rounds the cells into strokes, as a low-resolution scan looks.
    ink = np.clip(np.asarray(ink.resize((size, size), Image.Resampling.BICUBIC)), 0, 1)
    margin = size // 4
    ink = np.pad(ink, margin)
    paper = _paper(rng, *ink.shape)
    gray = paper * (1 - ink) + rng.uniform(0, 60) * ink
    return _encode(gray, PNG, rng)


def load_uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled UCI digits: images [1797,8,8] in 0-16 and labels.

    Reads the file behind `sklearn.datasets.load_digits` directly: importing scikit-learn
    costs seconds, reading its CSV a few milliseconds.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a future layout: its public API

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


# --- the set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadSet:
    """Model input as the gateway produces it: float32 [N,28,28] in [0,1], labels, tags."""

    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray  # "printed" | "handwriting"
    image_format: np.ndarray  # "PNG" | "JPEG"
    font: np.ndarray  # font file name, "" for handwriting

    def fingerprint(self) -> str:
        """SHA-256 over every input and label: equal on every machine that builds the set."""
        digest = hashlib.sha256()
        digest.update(np.round(self.images, 4).astype(np.float32).tobytes())
        digest.update(self.labels.astype(np.int64).tobytes())
        return f"sha256:{digest.hexdigest()}"

    def select(self, mask: np.ndarray) -> UploadSet:
        return UploadSet(
            self.images[mask], self.labels[mask], self.source[mask],
            self.image_format[mask], self.font[mask],
        )  # fmt: skip


def gateway_preprocess(data: bytes) -> np.ndarray:
    """The gateway's own upload preprocessing (bytes -> float32 [28,28] in [0,1])."""
    # Imported here: the gateway's module is TensorFlow-free, and the trainer only needs it
    # when it evaluates.
    from gateway.preprocessing import prepare_image

    return prepare_image(data)


def _readable(render: Callable[[], bytes]) -> np.ndarray:
    """Render until the gateway finds a digit in the picture, and return what it made of it.

    A photo so faint or blurred that the gateway answers "no digit found" (HTTP 422) tells
    nothing about the model, so it is drawn again; the retries come from the same seeded
    generator, so the set stays the same on every run.
    """
    from gateway.errors import NoInkError

    for _ in range(MAX_RENDER_ATTEMPTS - 1):
        try:
            return gateway_preprocess(render())
        except NoInkError:
            continue
    return gateway_preprocess(render())


def cache_path(seed: int, kind: str = EVAL_SET_ID, *parts: str) -> Path:
    """Where a built set is kept: keyed by everything that shapes it.

    Its kind (the evaluation set's id, or the training glyphs), seed and other `parts`,
    this module's and the gateway preprocessing's source, and the versions of the
    libraries that draw and decode it; any change builds it anew.
    """
    import matplotlib
    import PIL

    from gateway import preprocessing

    digest = hashlib.sha256()
    for part in (kind, str(seed), *parts, PIL.__version__, matplotlib.__version__, np.__version__):
        digest.update(part.encode())
    for source in (Path(__file__), Path(preprocessing.__file__)):
        digest.update(source.read_bytes())
    base = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)
    return base / f"{kind}-{digest.hexdigest()[:16]}.npz"


def _load_arrays(path: Path, names: tuple[str, ...]) -> list[np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return [data[name] for name in names]
    except (OSError, ValueError, KeyError):
        return None


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temp, **arrays)
        temp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError as error:  # a read-only home only costs the next run a rebuild
        log.info("not cached at %s: %s", path, error)


def _load_cached(path: Path) -> UploadSet | None:
    arrays = _load_arrays(path, tuple(UploadSet.__dataclass_fields__))
    return None if arrays is None else UploadSet(*arrays)


def _save_cached(path: Path, upload_set: UploadSet) -> None:
    _save_arrays(path, {name: getattr(upload_set, name) for name in UploadSet.__dataclass_fields__})


@functools.lru_cache(maxsize=2)
def build_upload_set(seed: int = EVAL_SEED, use_cache: bool = True) -> UploadSet:
    """The whole upload-like evaluation set (2,437 images).

    Generating it takes about 8 s on 2 cores; the result is kept on disk (`cache_path`,
    under $TRAINER_CACHE_DIR or ~/.cache/mnist-serving) and in memory.
    """
    path = cache_path(seed)
    cached = _load_cached(path) if use_cache else None
    if cached is not None:
        cached.images.flags.writeable = False
        return cached
    upload_set = _generate(seed)
    if use_cache:
        _save_cached(path, upload_set)
    return upload_set


def _generate(seed: int) -> UploadSet:
    rng = np.random.default_rng(seed)
    images, labels, sources, formats, fonts = [], [], [], [], []
    for font_path in find_fonts(EVAL_FONTS, required=True):
        for digit in range(NUM_CLASSES):
            for variant in range(PRINTED_VARIANTS_PER_DIGIT):
                image_format = JPEG if variant % 2 else PNG
                images.append(
                    _readable(
                        functools.partial(render_printed_digit, font_path, digit, rng, image_format)
                    )
                )
                labels.append(digit)
                sources.append("printed")
                formats.append(image_format)
                fonts.append(font_path.name)
    uci_images, uci_labels = load_uci_digits()
    for pixels, label in zip(uci_images, uci_labels, strict=True):
        images.append(_readable(functools.partial(render_scanned_digit, pixels, rng)))
        labels.append(int(label))
        sources.append("handwriting")
        formats.append(PNG)
        fonts.append("")
    upload_set = UploadSet(
        np.stack(images).astype(np.float32),
        np.asarray(labels, dtype=np.int64),
        np.asarray(sources),
        np.asarray(formats),
        np.asarray(fonts),
    )
    upload_set.images.flags.writeable = False
    return upload_set


@functools.lru_cache(maxsize=2)
def training_glyphs(seed: int, variants: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Printed digits in the training fonts, as the gateway hands them to the model.

    Rendered as uploads are (`render_printed_digit`), with a seed of their own, then
    preprocessed by the gateway: uint8 [N,28,28] and labels [N]. Small (fonts x 10 x
    `variants`): `trainer.augment` distorts them further on the fly. Kept on disk beside
    the evaluation set (rendering takes seconds), keyed also by the font files found
    (name and size: a font package's update draws them anew).
    """
    fonts = find_fonts(TRAIN_FONTS, required=False)
    font_keys = (f"{font.name}:{font.stat().st_size}" for font in fonts)
    path = cache_path(seed, "training-glyphs", str(variants), *font_keys)
    cached = _load_arrays(path, ("images", "labels"))
    if cached is not None:
        return cached[0], cached[1]
    rng = np.random.default_rng([seed, 1])
    images, labels = [], []
    for font_path in fonts:
        for digit in range(NUM_CLASSES):
            for variant in range(variants):
                image_format = (PNG, JPEG)[variant % 2]
                images.append(
                    _readable(
                        functools.partial(render_printed_digit, font_path, digit, rng, image_format)
                    )
                )
                labels.append(digit)
    pixels = np.rint(np.stack(images) * 255).astype(np.uint8)
    glyph_labels = np.asarray(labels, dtype=np.int64)
    _save_arrays(path, {"images": pixels, "labels": glyph_labels})
    return pixels, glyph_labels


# --- scoring ------------------------------------------------------------------------------------


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((predicted == labels).mean()) if len(labels) else float("nan")


def score_upload_set(
    predict: Callable[[np.ndarray], np.ndarray], upload_set: UploadSet | None = None
) -> dict[str, Any]:
    """Accuracy of `predict` (images [N,28,28] -> probabilities [N,10]) on the set.

    Returns the figures metadata.json records under `metrics.upload`: printed and
    handwriting accuracy (the issue's two targets), their mean (what the gate compares),
    and the printed figure by format and by font.
    """
    upload_set = upload_set or build_upload_set()
    predicted = np.asarray(predict(upload_set.images)).argmax(axis=1)
    printed = upload_set.source == "printed"
    handwriting = upload_set.source == "handwriting"
    printed_accuracy = _accuracy(predicted[printed], upload_set.labels[printed])
    handwriting_accuracy = _accuracy(predicted[handwriting], upload_set.labels[handwriting])
    by = {
        "format": {
            image_format: round(_accuracy(predicted[mask], upload_set.labels[mask]), 4)
            for image_format in (PNG, JPEG)
            if (mask := printed & (upload_set.image_format == image_format)).any()
        },
        "font": {
            font: round(_accuracy(predicted[mask], upload_set.labels[mask]), 4)
            for font in EVAL_FONTS
            if (mask := upload_set.font == font).any()
        },
    }
    return {
        "eval_set": EVAL_SET_ID,
        "fingerprint": upload_set.fingerprint(),
        "printed_accuracy": round(printed_accuracy, 4),
        "printed_samples": int(printed.sum()),
        "handwriting_accuracy": round(handwriting_accuracy, 4),
        "handwriting_samples": int(handwriting.sum()),
        "accuracy": round((printed_accuracy + handwriting_accuracy) / 2, 4),
        "printed_by": by,
    }
