"""`python -m trainer`: the Typer CLI (train, list, push-metrics); TensorFlow loads lazily."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from trainer.config import get_settings
from trainer.data import DatasetSource
from trainer.errors import EXIT_OK, TrainerError, exit_code_for
from trainer.models import Architecture
from trainer.repository import describe_repository, list_versions
from trainer.train import OptimizerName

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


@app.command()
def train(
    model: Annotated[Architecture, typer.Option(help="Architecture to train.")] = Architecture.MLP,
    dataset: Annotated[
        DatasetSource,
        typer.Option(help="MNIST source; auto = local cache, then download, then offline sample."),
    ] = DatasetSource.AUTO,
    data_path: Annotated[
        Path | None, typer.Option(help="mnist.npz file (npz) or IDX directory (idx).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Max epochs (default per model).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default per model).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    optimizer: Annotated[OptimizerName, typer.Option(help="Optimizer.")] = OptimizerName.ADAM,
    seed: Annotated[int, typer.Option(help="Seed for splits, weights and shuffling.")] = 42,
    augment: Annotated[
        bool, typer.Option(help="Random small rotation, zoom and shift (never flips).")
    ] = False,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 5,
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

    try:
        config = TrainConfig(
            model=model,
            dataset=dataset,
            data_path=data_path,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            seed=seed,
            augment=augment,
            patience=patience,
            min_accuracy=min_accuracy,
            max_regression=max_regression,
            model_repository=repository,
            model_name=name,
            output_dir=output_dir,
            tensorboard_dir=tensorboard_dir,
        )
        result = run_training(config)
    except TrainerError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_code_for(error)) from None
    typer.echo(result.version_dir)
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
    typer.echo(f"{'model':<12} {'version':>7} {'architecture':<12} {'accuracy':>8}  created")
    for name, versions in models.items():
        for info in versions:
            accuracy = f"{info.accuracy:.4f}" if info.accuracy is not None else "-"
            typer.echo(
                f"{name:<12} {info.version:>7} {info.metadata.get('architecture', '-'):<12} "
                f"{accuracy:>8}  {info.metadata.get('created_at', '-')}"
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
