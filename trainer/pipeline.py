"""One training job end to end: load, split, train, evaluate, gate, export, report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import Settings, get_settings
from trainer.data import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    DatasetSource,
    Mnist,
    Splits,
    load_mnist,
    split_dataset,
)
from trainer.errors import InvalidOptionError
from trainer.gate import check_quality_gate
from trainer.models import Architecture
from trainer.repository import latest_version
from trainer.train import FitOptions, LrSchedule, OptimizerName

log = logging.getLogger(__name__)

# What a flag left unset means, per architecture: enough epochs for early stopping to end
# a run on the 5,000-image offline sample. `make demo` and the Kubernetes Jobs pass their
# own (two or five epochs over the whole MNIST with a cosine schedule: README).
MODEL_DEFAULTS: dict[Architecture, dict[str, Any]] = {
    Architecture.MLP: {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3},
    Architecture.MLP_BN: {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3},
    Architecture.CNN: {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3},
    Architecture.CNN_BN: {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3},
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
    lr_schedule: LrSchedule = LrSchedule.PLATEAU
    seed: int = 42
    augment: bool = False
    augment_strength: float = 1.0
    printed_share: float = 0.2
    units: int | None = None
    dropout: float | None = None
    patience: int = 5
    # Training labels permuted among the examples: a model that learned nothing, published
    # (with the gate bypassed) to prove the rollout controller catches one in production.
    shuffle_labels: bool = False
    distributed: bool = False
    worker_timeout: float = 120.0
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
        self.lr_schedule = LrSchedule(self.lr_schedule)
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
        if not 0 <= self.augment_strength <= 1:
            problems.append(f"--augment-strength must be in [0,1], got {self.augment_strength}")
        if not 0 <= self.printed_share < 1:
            problems.append(f"--printed-share must be in [0,1), got {self.printed_share}")
        if self.units is not None and self.units < 2:
            problems.append(f"--units must be >= 2, got {self.units}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0,1), got {self.dropout}")
        if not self.worker_timeout > 0:
            problems.append(f"--worker-timeout must be > 0, got {self.worker_timeout}")
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
            "lr_schedule": self.lr_schedule.value,
            "seed": self.seed,
            "augment": self.augment,
            "augment_strength": self.augment_strength,
            "printed_share": self.printed_share,
            "units": self.units,
            "dropout": self.dropout,
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


def build_provenance(created: dt.datetime, settings: Settings) -> dict[str, Any]:
    """The metadata fields every export carries about itself: signatures, time, revision."""
    return {
        "signatures": ["serving_default", "predict_images", "reference_stats"],
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_revision": settings.git_revision or git_revision(),
    }


def publish_version(
    model: Any, repository: Path, model_name: str, metadata: dict[str, Any], splits: Splits
) -> Path:
    """Export `model` as the next version: its reference statistics from the validation
    split, warmup requests from the test split. Returns the version directory."""
    from trainer.export import export_model

    reference = compute_reference_stats(model, splits.x_val)
    return export_model(
        model, repository, model_name, metadata, splits.x_test[:8], reference=reference
    )


def compute_reference_stats(model: Any, images: Any) -> dict[str, Any]:
    """Reference statistics of held-out `images` (uint8) as the model sees them."""
    from trainer.data import scale_pixels
    from trainer.reference_stats import compute_reference

    scaled = scale_pixels(images)
    probabilities = model.predict(scaled, verbose=0, batch_size=256)
    return compute_reference(scaled.reshape(-1, 28, 28), probabilities)


def run_training(config: TrainConfig) -> TrainResult:
    """Run one job; raise QualityGateError (after saving the run's outputs) on refusal.

    With `config.distributed`, every worker of TF_CONFIG's cluster runs this: all train,
    only the chief evaluates, gates and exports; the others return a result without a
    version once the chief is done.
    """
    from trainer.train import seed_everything

    started = dt.datetime.now(dt.UTC)
    cluster = strategy = watchdog = None
    if config.distributed:
        from trainer import distributed

        cluster = distributed.read_cluster()
        # Before any other TensorFlow op: the strategy configures the runtime, and returns
        # once every worker has joined.
        strategy = distributed.create_strategy(cluster)
        watchdog = distributed.Watchdog(cluster, config.worker_timeout).start()
        log.info("%s of %d workers joined the cluster", cluster.name, cluster.num_workers)
    is_chief = cluster is None or cluster.is_chief

    mnist, splits = load_splits(config)
    options = fit_options(config, num_workers=cluster.num_workers if cluster else 1)
    fit_started = time.perf_counter()
    if strategy is None:
        model, history = train_model(config, splits, options)
    else:
        seed_everything(config.seed)
        model, history = fit_distributed(config, splits, options, strategy, watchdog)
    train_seconds = time.perf_counter() - fit_started
    if watchdog is not None:
        watchdog.finishing()
    if not is_chief:
        log.info("%s trained in %.1fs; the chief exports", cluster.name, train_seconds)
        distributed.barrier(strategy)  # the chief's export is the job's end
        watchdog.stop()
        return TrainResult(None, None, {}, Path(), train_seconds, history)
    try:
        workers = cluster.num_workers if cluster else 1
        return finish_training(
            config, mnist, splits, model, history, train_seconds, started, workers
        )
    finally:
        if strategy is not None:
            distributed.barrier(strategy)
            watchdog.stop()


def load_configured_mnist(
    dataset: DatasetSource, data_path: Path | None, settings: Settings
) -> Mnist:
    """MNIST from `dataset`, with the download URL, checksum, timeout and cache of the
    trainer's settings."""
    return load_mnist(
        dataset,
        data_path,
        url=settings.mnist_url,
        sha256=settings.mnist_sha256,
        timeout=settings.download_timeout_seconds,
        cache_dir=settings.keras_cache_dir,
        wheel_dir=settings.mnist_wheel_dir,
    )


def load_splits(config: TrainConfig) -> tuple[Mnist, Splits]:
    """The job's MNIST and its seeded train/validation/test split."""
    mnist = load_configured_mnist(config.dataset, config.data_path, config.settings)
    splits = split_dataset(mnist, config.val_fraction, config.test_fraction, config.seed)
    if config.shuffle_labels:
        # Only the training labels: validation and test stay true, so the gate and the
        # metadata report the (chance-level) accuracy honestly.
        rng = np.random.default_rng(config.seed)
        splits = dataclasses.replace(splits, y_train=rng.permutation(splits.y_train))
        log.warning("training labels shuffled (--shuffle-labels): this model learns nothing")
    log.info("data %s (%d images): splits %s", mnist.source, mnist.size, splits.sizes())
    return mnist, splits


def train_model(
    config: TrainConfig, splits: Splits, options: FitOptions | None = None
) -> tuple[Any, dict[str, list[float]]]:
    """Seed, build and fit in this process: the one training path of `train` and `tune`."""
    from trainer.models import build_model
    from trainer.train import fit_model, seed_everything

    options = options or fit_options(config)
    seed_everything(config.seed)
    model = build_model(config.model, config.units, config.dropout)
    return model, fit_model(model, splits, options)


def fit_options(config: TrainConfig, num_workers: int = 1) -> FitOptions:
    """The FitOptions of a job; under N workers the global batch is N x --batch-size."""
    printed = None
    if config.augment and config.augment_strength > 0 and config.printed_share > 0:
        from trainer.upload_eval import training_glyphs

        printed = training_glyphs(config.seed)
        log.info("mixing %d printed digits in the training fonts into training", len(printed[1]))
    return FitOptions(
        epochs=config.epochs,
        batch_size=config.batch_size * num_workers,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        seed=config.seed,
        augment=config.augment,
        patience=config.patience,
        tensorboard_dir=config.tensorboard_dir,
        augment_strength=config.augment_strength,
        printed=printed,
        printed_share=config.printed_share,
        lr_schedule=config.lr_schedule,
    )


def fit_distributed(config, splits, options, strategy, watchdog):
    """Build and fit under the strategy; return a plain (strategy-free) copy and history.

    Each worker's input is its own shard (`options.shard`), built by the strategy's
    input context. The copy lets the chief evaluate and export without collective ops.
    """
    import dataclasses

    from trainer import distributed
    from trainer.models import build_model
    from trainer.train import fit_under_strategy, make_train_dataset, make_val_dataset

    def per_worker(make, x, y):
        def dataset_fn(context):
            shard = (context.input_pipeline_id, context.num_input_pipelines)
            return make(x, y, dataclasses.replace(options, shard=shard))

        return strategy.distribute_datasets_from_function(dataset_fn)

    cluster = watchdog.cluster
    try:
        with strategy.scope():
            model = build_model(config.model, config.units, config.dropout)
            history = fit_under_strategy(
                model,
                strategy,
                per_worker(make_train_dataset, splits.x_train, splits.y_train),
                per_worker(make_val_dataset, splits.x_val, splits.y_val),
                options,
                len(splits.y_train),
                extra_callbacks=[distributed.progress_callback(watchdog)],
            )
    except Exception as error:
        if distributed.is_collective_failure(error):
            distributed.fail(cluster, f"TensorFlow: {str(error).splitlines()[0]}")
        raise
    plain = build_model(config.model, config.units, config.dropout)
    plain.set_weights(model.get_weights())
    return plain, history


def finish_training(
    config, mnist, splits, model, history, train_seconds, started, workers=1
) -> TrainResult:
    """Evaluate on MNIST and the upload-like set, report, gate and export (the chief's part)."""
    from trainer.evaluate import (
        evaluate_model,
        evaluate_uploads,
        save_confusion_matrix_png,
        save_learning_curves_png,
    )

    settings = config.settings
    run_dir = (
        config.output_dir / f"{config.model_name}-{config.model.value}-{started:%Y%m%dT%H%M%S%fZ}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_model(model, splits.x_test, splits.y_test)
    upload = evaluate_uploads(model)
    title = f"{config.model_name} ({config.model.value})"
    save_confusion_matrix_png(metrics["confusion_matrix"], run_dir / "confusion_matrix.png", title)
    save_learning_curves_png(history, run_dir / "learning_curves.png", title)
    summary = {
        "model": config.model.value,
        "metrics": {k: metrics[k] for k in ("accuracy", "loss", "test_samples", "per_class")}
        | {"upload": upload},
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(train_seconds, 3),
        "history": history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "test accuracy %.4f, loss %.4f; upload-like: printed %.4f, handwriting %.4f; "
        "after %d epochs (%.1fs); outputs in %s",
        metrics["accuracy"],
        metrics["loss"],
        upload["printed_accuracy"],
        upload["handwriting_accuracy"],
        summary["epochs_run"],
        train_seconds,
        run_dir,
    )

    model_dir = config.model_repository / config.model_name
    baseline = latest_version(model_dir)
    check_quality_gate(
        metrics["accuracy"], config.min_accuracy, config.max_regression, baseline, upload
    )

    metadata = {
        "model_name": config.model_name,
        "architecture": config.model.value,
        "hyperparameters": config.hyperparameters(),
        "dataset": {
            "source": mnist.source,
            "checksum": mnist.checksum(),
            "images": mnist.size,
            "splits": splits.sizes(),
            "shuffled_labels": config.shuffle_labels,
        },
        "metrics": summary["metrics"] | {"confusion_matrix": metrics["confusion_matrix"]},
        "training": {
            "epochs_run": summary["epochs_run"],
            "train_seconds": summary["train_seconds"],
            # Under --distributed, --batch-size is per worker: the global batch is the product.
            "workers": workers,
            "global_batch_size": config.batch_size * workers,
        },
        **build_provenance(started, settings),
    }
    version_dir = publish_version(
        model, config.model_repository, config.model_name, metadata, splits
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
            upload=upload,
        )
    return TrainResult(
        version_dir, version, metrics | {"upload": upload}, run_dir, train_seconds, history
    )
