"""`trainer tune`: hyperparameter search with KerasTuner, trials trained as `train` trains.

Each trial is a `TrainConfig` (the CLI's defaults, overridden by the trial's values) fed
to the same code `trainer train` runs, so `train --config best_hyperparameters.json`
trains the best trial's model again, to within run-to-run noise at the same seed.

The tune directory (`--directory`) holds KerasTuner's own state, so a killed tune picks
up where it stopped, and what the search produced:

- `trials.csv`, `trials.png`: every trial's values and figures (rewritten after each);
- `best_hyperparameters.json`: the best trial as options `trainer train --config` takes.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from trainer.models import DEFAULT_DROPOUT, DEFAULT_UNITS, Architecture
from trainer.pipeline import MODEL_DEFAULTS, TrainConfig, load_splits

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
TRIALS_PNG = "trials.png"
BEST_FILE = "best_hyperparameters.json"
PROJECT = "search"


class TunerName(StrEnum):
    """`--tuner` choices: KerasTuner's search algorithms."""

    GRID = "grid"
    RANDOM = "random"
    HYPERBAND = "hyperband"


class Objective(StrEnum):
    """`--objective`: what the search maximises."""

    VAL_ACCURACY = "val_accuracy"
    UPLOAD_ACCURACY = "upload_accuracy"


@dataclass(frozen=True)
class SearchSpace:
    """The values tried for each hyperparameter; the defaults are the trainer's own."""

    units: tuple[int, ...] = (64, 128, 256)
    dropout: tuple[float, ...] = (0.0, 0.3)
    learning_rate: tuple[float, ...] = (1e-3, 3e-3)
    batch_size: tuple[int, ...] = (32, 64, 128)
    augment_strength: tuple[float, ...] = (0.0, 0.5, 1.0)

    def defaults(self, model: Architecture) -> dict[str, Any]:
        """The declared default of each hyperparameter: what `train` uses unless told."""
        return {
            "units": DEFAULT_UNITS,
            "dropout": DEFAULT_DROPOUT[model],
            "learning_rate": MODEL_DEFAULTS[model]["learning_rate"],
            "batch_size": MODEL_DEFAULTS[model]["batch_size"],
            "augment_strength": 0.0,
        }

    def declare(self, hp: Any, model: Architecture) -> dict[str, Any]:
        """Declare the space on KerasTuner's HyperParameters; return this trial's values."""
        defaults = self.defaults(model)
        values = {}
        for name, choices in (
            ("units", self.units),
            ("dropout", self.dropout),
            ("learning_rate", self.learning_rate),
            ("batch_size", self.batch_size),
            ("augment_strength", self.augment_strength),
        ):
            choices = tuple(sorted({*choices, defaults[name]}))
            values[name] = hp.Choice(name, list(choices), default=defaults[name])
        return values


def trial_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one trial: `base` with the trial's hyperparameters."""
    strength = float(values["augment_strength"])
    return replace(
        base,
        units=int(values["units"]),
        dropout=float(values["dropout"]),
        learning_rate=float(values["learning_rate"]),
        batch_size=int(values["batch_size"]),
        augment=strength > 0,
        augment_strength=strength,
        epochs=int(values.get("tuner/epochs", base.epochs)),
    )


def config_file_values(config: TrainConfig) -> dict[str, Any]:
    """The options of `config` as `trainer train --config` reads them."""
    return {
        "model": config.model.value,
        "dataset": config.dataset.value,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "optimizer": config.optimizer.value,
        "seed": config.seed,
        "augment": config.augment,
        "augment_strength": config.augment_strength,
        "printed_share": config.printed_share,
        "units": config.units,
        "dropout": config.dropout,
        "patience": config.patience,
    }


def train_trial(config: TrainConfig, splits: Any) -> dict[str, float]:
    """Train one trial exactly as `trainer train` trains; return its figures."""
    import keras

    from trainer.evaluate import evaluate_model, evaluate_uploads
    from trainer.pipeline import train_model

    keras.backend.clear_session()
    started = time.perf_counter()
    model, history = train_model(config, splits)
    upload = evaluate_uploads(model)
    return {
        "val_accuracy": evaluate_model(model, splits.x_val, splits.y_val)["accuracy"],
        "test_accuracy": evaluate_model(model, splits.x_test, splits.y_test)["accuracy"],
        "upload_accuracy": upload["accuracy"],
        "printed_accuracy": upload["printed_accuracy"],
        "handwriting_accuracy": upload["handwriting_accuracy"],
        "epochs_run": float(len(history.get("loss", []))),
        "seconds": round(time.perf_counter() - started, 2),
    }


def make_tuner(
    tuner: TunerName,
    base: TrainConfig,
    splits: Any,
    objective: Objective,
    max_trials: int,
    directory: Path,
    space: SearchSpace,
) -> Any:
    """A KerasTuner tuner whose trials run `train_trial` and report one line each."""
    import keras_tuner as kt

    algorithm = {
        TunerName.GRID: kt.GridSearch,
        TunerName.RANDOM: kt.RandomSearch,
        TunerName.HYPERBAND: kt.Hyperband,
    }[tuner]

    class TrainerTuner(algorithm):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            space.declare(trial.hyperparameters, base.model)
            return train_trial(trial_config(base, trial.hyperparameters.values), splits)

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            rows = trial_rows(self.oracle, objective)
            report_trial(trial, rows, objective)
            write_results(directory, rows, base, objective)

        # Trials are retrained for export; KerasTuner's model files are never read.
        def save_model(self, trial_id: Any, model: Any, step: int = 0) -> None:
            return None

    class Space(kt.HyperModel):
        """The search space; KerasTuner builds it once to learn the hyperparameters."""

        def declare_hyperparameters(self, hp: Any) -> None:
            space.declare(hp, base.model)

        def build(self, hp: Any) -> Any:
            from trainer.models import build_model

            values = space.declare(hp, base.model)
            return build_model(base.model, values["units"], values["dropout"])

    common = {
        "hypermodel": Space(),
        "objective": kt.Objective(objective.value, direction="max"),
        "seed": base.seed,
        "directory": str(directory),
        "project_name": PROJECT,
        "overwrite": False,  # a second run with the same directory resumes
    }
    if tuner is TunerName.HYPERBAND:
        searcher = TrainerTuner(max_epochs=base.epochs, factor=3, **common)
    else:
        searcher = TrainerTuner(max_trials=max_trials, **common)
    # Hyperband takes no max_trials, and a resumed tuner reloads the previous run's: this
    # run's --max-trials is the one that counts.
    searcher.oracle.max_trials = max_trials
    if tuner is TunerName.GRID:
        restore_grid_walk(searcher.oracle)
    return searcher


def restore_grid_walk(oracle: Any) -> None:
    """Let a reloaded grid search go on where it stopped.

    KerasTuner 1.4's GridSearchOracle keeps its walk through the grid in memory only (the
    trials in grid order, and those whose next combination is still to be tried), so a
    reloaded one sees trials but nothing to continue from, and stops. Rebuild both from
    the reloaded trials.
    """
    if not oracle.start_order or len(oracle._populate_next) > 0:
        return  # a fresh search, or one this process ran
    in_grid_order = sorted(
        oracle.start_order,
        key=functools.cmp_to_key(
            lambda a, b: oracle._compare(
                oracle.trials[a].hyperparameters.values, oracle.trials[b].hyperparameters.values
            )
        ),
    )
    for trial_id in in_grid_order:
        oracle._ordered_ids.insert(trial_id)
    oracle._populate_next = list(in_grid_order)


def trial_rows(oracle: Any, objective: Objective) -> list[dict[str, Any]]:
    """One row per trial (id order): status, hyperparameters, figures."""
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        row: dict[str, Any] = {"trial": trial_id, "status": trial.status}
        row |= {
            key.removeprefix("tuner/"): value
            for key, value in trial.hyperparameters.values.items()
            if key in ("units", "dropout", "learning_rate", "batch_size", "augment_strength")
            or key == "tuner/epochs"
        }
        for name in (
            "val_accuracy", "test_accuracy", "upload_accuracy", "printed_accuracy",
            "handwriting_accuracy", "epochs_run", "seconds",
        ):  # fmt: skip
            if trial.metrics.exists(name):
                row[name] = round(float(trial.metrics.get_last_value(name)), 4)
        row["objective"] = row.get(objective.value)
        rows.append(row)
    return rows


def report_trial(trial: Any, rows: list[dict[str, Any]], objective: Objective) -> None:
    """The one progress line of a finished trial."""
    row = next(r for r in rows if r["trial"] == trial.trial_id)
    done = [r for r in rows if r.get("objective") is not None]
    best = max(done, key=lambda r: r["objective"]) if done else None
    values = " ".join(
        f"{key}={row[key]}"
        for key in ("units", "dropout", "learning_rate", "batch_size", "augment_strength")
        if key in row
    )
    figures = " ".join(
        f"{key}={row[key]:.4f}"
        for key in ("val_accuracy", "test_accuracy", "printed_accuracy", "handwriting_accuracy")
        if key in row
    )
    best_text = f"best {best['trial']} {objective.value}={best['objective']:.4f}" if best else ""
    print(
        f"trial {row['trial']} {row['status'].lower()}: {values} -> {figures} "
        f"({row.get('seconds', 0):.1f}s); {best_text}",
        flush=True,
    )


def write_results(
    directory: Path, rows: list[dict[str, Any]], base: TrainConfig, objective: Objective
) -> Path | None:
    """trials.csv, trials.png and best_hyperparameters.json; return the best file."""
    directory.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with (directory / TRIALS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    save_trials_png(rows, directory / TRIALS_PNG, objective)
    done = [row for row in rows if row.get("objective") is not None]
    if not done:
        return None
    best = max(done, key=lambda row: row["objective"])
    config = trial_config(base, {**best, "tuner/epochs": best.get("epochs", base.epochs)})
    values = config_file_values(config) | {
        "_trial": best["trial"],
        "_objective": objective.value,
        "_score": best["objective"],
        "_val_accuracy": best.get("val_accuracy"),
        "_test_accuracy": best.get("test_accuracy"),
        "_printed_accuracy": best.get("printed_accuracy"),
        "_handwriting_accuracy": best.get("handwriting_accuracy"),
    }
    path = directory / BEST_FILE
    path.write_text(json.dumps(values, indent=2))
    return path


def save_trials_png(rows: list[dict[str, Any]], path: Path, objective: Objective) -> Path:
    """Each trial's objective, validation and upload-like accuracy, the best one marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    ids = list(range(1, len(rows) + 1))
    for key, marker in (
        ("val_accuracy", "o"), ("printed_accuracy", "s"), ("handwriting_accuracy", "^"),
    ):  # fmt: skip
        axes.plot(
            ids, [row.get(key, float("nan")) for row in rows], marker=marker, ls="", label=key
        )
    scored = [(i, row["objective"]) for i, row in zip(ids, rows, strict=True) if row["objective"]]
    if scored:
        best_id, best_value = max(scored, key=lambda pair: pair[1])
        axes.scatter(
            [best_id], [best_value], s=200, facecolors="none", edgecolors="red",
            label=f"best ({objective.value})",
        )  # fmt: skip
    axes.set(xlabel="trial", ylabel="accuracy", title=f"trainer tune: {len(rows)} trials")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def run_tune(
    base: TrainConfig,
    tuner: TunerName,
    max_trials: int,
    objective: Objective,
    directory: Path,
    space: SearchSpace | None = None,
) -> Path | None:
    """Search (or resume searching) and return the best hyperparameters file."""
    _, splits = load_splits(base)
    space = space or SearchSpace()
    searcher = make_tuner(tuner, base, splits, objective, max_trials, directory, space)
    finished = sum(1 for t in searcher.oracle.trials.values() if t.status == "COMPLETED")
    if finished:
        print(f"resuming {directory}: {finished} trial(s) already done", flush=True)
    searcher.search(verbose=0)
    rows = trial_rows(searcher.oracle, objective)
    return write_results(directory, rows, base, objective)
