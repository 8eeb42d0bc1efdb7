"""The upload-like evaluation set: pinned, the gateway's preprocessing, eval-only sources."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys

import numpy as np
import pytest

from tests.fixtures.processes import REPO_ROOT
from trainer.upload_eval import (
    EVAL_FONTS,
    EVAL_SEED,
    HANDWRITING_FONT_PACKAGES,
    JPEG,
    PNG,
    PRINTED_VARIANTS_PER_DIGIT,
    TRAIN_FONTS,
    _load_cached,
    _readable,
    _save_cached,
    build_upload_set,
    find_fonts,
    gateway_preprocess,
    handwriting_font_dirs,
    load_uci_digits,
    render_printed_digit,
    render_scanned_digit,
    score_upload_set,
)

EXPECTED_SIZE = len(EVAL_FONTS) * 10 * PRINTED_VARIANTS_PER_DIGIT + 1797


@pytest.fixture(scope="module")
def upload_set():
    return build_upload_set()


def test_the_set_has_printed_png_and_jpeg_and_independent_handwriting(upload_set) -> None:
    assert upload_set.images.shape == (EXPECTED_SIZE, 28, 28)
    assert upload_set.images.dtype == np.float32
    assert upload_set.images.min() >= 0 and upload_set.images.max() <= 1
    printed = upload_set.source == "printed"
    assert printed.sum() == len(EVAL_FONTS) * 10 * PRINTED_VARIANTS_PER_DIGIT
    assert set(upload_set.image_format[printed]) == {PNG, JPEG}
    assert (upload_set.image_format[printed] == JPEG).sum() == printed.sum() // 2
    assert set(upload_set.font[printed]) == set(EVAL_FONTS)
    assert (upload_set.source == "handwriting").sum() == 1797
    assert np.bincount(upload_set.labels, minlength=10).min() > 200  # every digit, often


def test_the_set_is_the_same_on_every_run(upload_set) -> None:
    # The first image again, from the pinned seed: the same bytes, the same model input.
    rng = np.random.default_rng(EVAL_SEED)
    font = find_fonts(EVAL_FONTS[:1], required=True)[0]
    first = _readable(functools.partial(render_printed_digit, font, 0, rng, PNG))
    np.testing.assert_array_equal(first, upload_set.images[0])
    # The whole set generated again (the one above may come from the disk cache).
    from trainer.upload_eval import _generate

    assert _generate(EVAL_SEED).fingerprint() == upload_set.fingerprint()


def test_the_cache_holds_the_same_set(upload_set, tmp_path, monkeypatch) -> None:
    from trainer.upload_eval import CACHE_DIR_ENV, cache_path

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    path = cache_path(EVAL_SEED)
    assert path.parent == tmp_path and not path.exists()
    _save_cached(path, upload_set)
    loaded = _load_cached(path)
    assert loaded is not None and loaded.fingerprint() == upload_set.fingerprint()
    np.testing.assert_array_equal(loaded.font, upload_set.font)
    path.write_bytes(b"not an npz")  # a damaged cache is rebuilt, never trusted
    assert _load_cached(path) is None


def test_images_are_what_the_gateway_makes_of_the_upload(upload_set) -> None:
    from gateway.preprocessing import prepare_image

    rng = np.random.default_rng(3)
    font = find_fonts(EVAL_FONTS[-1:], required=True)[0]
    data = render_printed_digit(font, 7, rng, JPEG)
    assert data[:2] == b"\xff\xd8"  # a real JPEG file
    np.testing.assert_array_equal(gateway_preprocess(data), prepare_image(data))
    scan = render_scanned_digit(load_uci_digits()[0][0], rng)
    assert scan[:8] == b"\x89PNG\r\n\x1a\n"
    digit = gateway_preprocess(scan)
    # MNIST's layout: light ink on black, centre of mass near (14, 14).
    rows, cols = np.indices(digit.shape)
    assert digit[0].max() == 0 and digit.max() > 0.9
    assert abs((rows * digit).sum() / digit.sum() - 14) < 1.5
    assert abs((cols * digit).sum() / digit.sum() - 14) < 1.5


def test_evaluation_fonts_are_never_training_fonts() -> None:
    assert not set(EVAL_FONTS) & set(TRAIN_FONTS)
    families = {name.split("-")[0].removesuffix(".ttf") for name in EVAL_FONTS}
    assert len(families) >= 4, families
    # matplotlib ships every evaluation font, so the set is the same without system fonts.
    assert len(find_fonts(EVAL_FONTS, required=True)) == len(EVAL_FONTS)


def test_the_handwriting_fonts_come_from_their_packages_for_training_only() -> None:
    """The trainer extra installs every handwriting font package; its faces are found
    without system fonts, are training fonts, and are never evaluation fonts."""
    directories = handwriting_font_dirs()
    assert len(directories) == len(HANDWRITING_FONT_PACKAGES)
    shipped = {path.name for directory in directories for path in directory.glob("*.ttf")}
    assert shipped <= set(TRAIN_FONTS), shipped - set(TRAIN_FONTS)
    assert not shipped & set(EVAL_FONTS)
    found = find_fonts(tuple(sorted(shipped)), required=True)
    assert all(path.parent in directories for path in found)


def test_the_handwriting_is_uci_digits_and_never_reaches_training() -> None:
    from sklearn.datasets import load_digits

    images, labels = load_uci_digits()
    reference = load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    # Nothing on the training path reads it: not the training modules, not the glyphs.
    for module in ("train", "augment", "pipeline", "tune", "distributed", "data"):
        tree = ast.parse((REPO_ROOT / "trainer" / f"{module}.py").read_text())
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }  # fmt: skip
        assert not names & {"load_uci_digits", "build_upload_set", "load_digits"}, module


def test_scoring_counts_right_and_wrong_answers(upload_set) -> None:
    def oracle(images: np.ndarray) -> np.ndarray:
        assert images is upload_set.images
        return np.eye(10)[upload_set.labels]

    perfect = score_upload_set(oracle, upload_set)
    assert perfect["printed_accuracy"] == perfect["handwriting_accuracy"] == 1.0
    assert perfect["accuracy"] == 1.0
    assert perfect["printed_by"]["format"] == {PNG: 1.0, JPEG: 1.0}
    assert perfect["fingerprint"] == upload_set.fingerprint()
    sevens = score_upload_set(lambda images: np.tile(np.eye(10)[7], (len(images), 1)), upload_set)
    assert sevens["printed_accuracy"] == pytest.approx(0.1)
    assert sevens["handwriting_accuracy"] == pytest.approx(
        (upload_set.labels[upload_set.source == "handwriting"] == 7).mean(), abs=1e-4
    )


def test_the_gateway_preprocessing_pulls_no_tensorflow_into_the_gateway() -> None:
    code = (
        "import sys; from trainer.upload_eval import gateway_preprocess, training_glyphs; "
        "x, y = training_glyphs(1, variants=1); "
        "print(x.shape[1:], 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.stdout.split() == ["(28,", "28)", "False", "False"], result.stderr


def test_training_glyphs_come_back_the_same_from_the_disk_cache(tmp_path, monkeypatch) -> None:
    from trainer.upload_eval import CACHE_DIR_ENV, training_glyphs

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    training_glyphs.cache_clear()
    try:
        images, labels = training_glyphs(3, variants=1)
        (cached,) = tmp_path.glob("training-glyphs-*.npz")
        training_glyphs.cache_clear()
        again = training_glyphs(3, variants=1)
        np.testing.assert_array_equal(again[0], images)
        np.testing.assert_array_equal(again[1], labels)
        cached.write_bytes(b"damaged")  # rendered again, never trusted
        training_glyphs.cache_clear()
        np.testing.assert_array_equal(training_glyphs(3, variants=1)[0], images)
    finally:
        training_glyphs.cache_clear()
