"""One training job end to end: load, split, train, evaluate, gate, export, report."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import Settings, get_settings
from trainer.data import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    DatasetSource,
    load_mnist,
    split_dataset,
)
from trainer.errors import InvalidOptionError
from trainer.gate import check_quality_gate
from trainer.models import Architecture
from trainer.repository import latest_version
from trainer.train import FitOptions, OptimizerName

log = logging.getLogger(__name__)

# Tuned on this project's 2-core reference machine so `make demo` stays under a minute
# while passing the accuracy targets on the 5,000-image offline sample.
MODEL_DEFAULTS: dict[Architecture, dict[str, Any]] = {
    Architecture.MLP: {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3},
    Architecture.MLP_BN: {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3},
    Architecture.CNN: {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3},
}


@dataclass
class TrainConfig:
    """Everything one training job needs; the CLI and the test fixtures build one."""

    model: Architecture = Architecture.MLP
    dataset: DatasetSource = DatasetSource.AUTO
    data_path: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: OptimizerName = OptimizerName.ADAM
    seed: int = 42
    augment: bool = False
    patience: int = 5
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    min_accuracy: float = 0.9
    max_regression: float = 0.02
    model_repository: Path | None = None
    model_name: str | None = None
    output_dir: Path | None = None
    tensorboard_dir: Path | None = None
    push_metrics: bool = True
    settings: Settings = field(default_factory=get_settings)

    def __post_init__(self) -> None:
        self.model = Architecture(self.model)
        self.dataset = DatasetSource(self.dataset)
        self.optimizer = OptimizerName(self.optimizer)
        defaults = MODEL_DEFAULTS[self.model]
        self.epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        self.batch_size = self.batch_size or defaults["batch_size"]
        self.learning_rate = self.learning_rate or defaults["learning_rate"]
        self.model_repository = Path(self.model_repository or self.settings.model_repository)
        self.model_name = self.model_name or self.settings.model_name
        self.output_dir = Path(self.output_dir or self.settings.output_dir)
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            problems.append(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_accuracy <= 1:
            problems.append(f"--min-accuracy must be in [0,1], got {self.min_accuracy}")
        if not 0 <= self.max_regression <= 1:
            problems.append(f"--max-regression must be in [0,1], got {self.max_regression}")
        if not self.model_name or not self.model_name.replace("_", "").replace("-", "").isalnum():
            problems.append(
                f"--model-name must be letters, digits, - or _, got {self.model_name!r}"
            )
        if self.tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
            problems.append("--tensorboard-dir needs TensorBoard: pip install tensorboard")
        if problems:
            raise InvalidOptionError("; ".join(problems))

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer.value,
            "seed": self.seed,
            "augment": self.augment,
            "patience": self.patience,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }


@dataclass
class TrainResult:
    """What a job produced. `version_dir` is None when the gate refused the model."""

    version_dir: Path | None
    version: int | None
    metrics: dict[str, Any]
    run_dir: Path
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def git_revision() -> str | None:
    """The current commit (with `-dirty` for local changes), or None outside a checkout."""
    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision or None


def compute_reference_stats(model: Any, images: Any) -> dict[str, Any]:
    """Reference statistics of held-out `images` (uint8) as the model sees them."""
    from trainer.data import scale_pixels
    from trainer.reference_stats import compute_reference

    scaled = scale_pixels(images)
    probabilities = model.predict(scaled, verbose=0, batch_size=256)
    return compute_reference(scaled.reshape(-1, 28, 28), probabilities)


def run_training(config: TrainConfig) -> TrainResult:
    """Run one job; raise QualityGateError (after saving the run's outputs) on refusal."""
    from trainer.evaluate import evaluate_model, save_confusion_matrix_png, save_learning_curves_png
    from trainer.export import export_model
    from trainer.models import build_model
    from trainer.train import fit_model, seed_everything

    settings = config.settings
    started = dt.datetime.now(dt.UTC)
    run_dir = (
        config.output_dir / f"{config.model_name}-{config.model.value}-{started:%Y%m%dT%H%M%S%fZ}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)

    mnist = load_mnist(
        config.dataset,
        config.data_path,
        url=settings.mnist_url,
        sha256=settings.mnist_sha256,
        timeout=settings.download_timeout_seconds,
        cache_dir=settings.keras_cache_dir,
    )
    splits = split_dataset(mnist, config.val_fraction, config.test_fraction, config.seed)
    log.info("data %s (%d images): splits %s", mnist.source, mnist.size, splits.sizes())

    seed_everything(config.seed)
    model = build_model(config.model)
    options = FitOptions(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        seed=config.seed,
        augment=config.augment,
        patience=config.patience,
        tensorboard_dir=config.tensorboard_dir,
    )
    fit_started = time.perf_counter()
    history = fit_model(model, splits, options)
    train_seconds = time.perf_counter() - fit_started

    metrics = evaluate_model(model, splits.x_test, splits.y_test)
    title = f"{config.model_name} ({config.model.value})"
    save_confusion_matrix_png(metrics["confusion_matrix"], run_dir / "confusion_matrix.png", title)
    save_learning_curves_png(history, run_dir / "learning_curves.png", title)
    summary = {
        "model": config.model.value,
        "metrics": {k: metrics[k] for k in ("accuracy", "loss", "test_samples", "per_class")},
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(train_seconds, 3),
        "history": history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "test accuracy %.4f, loss %.4f after %d epochs (%.1fs); outputs in %s",
        metrics["accuracy"],
        metrics["loss"],
        summary["epochs_run"],
        train_seconds,
        run_dir,
    )

    model_dir = config.model_repository / config.model_name
    baseline = latest_version(model_dir)
    check_quality_gate(metrics["accuracy"], config.min_accuracy, config.max_regression, baseline)

    metadata = {
        "model_name": config.model_name,
        "architecture": config.model.value,
        "hyperparameters": config.hyperparameters(),
        "dataset": {
            "source": mnist.source,
            "checksum": mnist.checksum(),
            "images": mnist.size,
            "splits": splits.sizes(),
        },
        "metrics": summary["metrics"] | {"confusion_matrix": metrics["confusion_matrix"]},
        "training": {
            "epochs_run": summary["epochs_run"],
            "train_seconds": summary["train_seconds"],
        },
        "signatures": ["serving_default", "predict_images", "reference_stats"],
        "created_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_revision": settings.git_revision or git_revision(),
    }
    reference = compute_reference_stats(model, splits.x_val)
    version_dir = export_model(
        model,
        config.model_repository,
        config.model_name,
        metadata,
        splits.x_test[:8],
        reference=reference,
    )
    version = int(version_dir.name)
    log.info("exported %s version %d to %s", config.model_name, version, version_dir)

    if config.push_metrics and settings.pushgateway_url:
        from trainer.metrics import push_training_metrics

        push_training_metrics(
            settings.pushgateway_url,
            config.model_name,
            version,
            metrics["accuracy"],
            metrics["loss"],
            train_seconds,
            timeout=settings.pushgateway_timeout_seconds,
        )
    return TrainResult(version_dir, version, metrics, run_dir, train_seconds, history)
