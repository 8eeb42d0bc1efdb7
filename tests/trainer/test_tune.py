"""`trainer tune`: a small grid search finishes, writes its table, and its best trial is
reproduced by `trainer train --config` at the same seed; a second run resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.cli import app
from trainer.repository import METADATA_PATH
from trainer.tune import BEST_FILE, TRIALS_CSV, TRIALS_PNG

pytestmark = pytest.mark.slow

SEED = 7


def tune(directory: Path, max_trials: int, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "tune", "--model", "mlp", "--tuner", "grid", "--max-trials", str(max_trials),
            "--epochs", "1", "--dataset", "offline", "--seed", str(SEED),
            "--directory", str(directory), *extra,
        ],
    )  # fmt: skip


def trial_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("trial ")]


def test_grid_search_writes_its_table_and_train_config_reproduces_the_best(tmp_path: Path):
    directory = tmp_path / "tune"
    result = tune(directory, 2)
    assert result.exit_code == 0, result.output[-3000:]
    lines = trial_lines(result.stdout)
    assert len(lines) == 2, result.stdout  # one progress line per trial
    assert all("val_accuracy=" in line and "printed_accuracy=" in line for line in lines)

    with (directory / TRIALS_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"units", "dropout", "learning_rate", "batch_size", "augment_strength"} <= set(rows[0])
    assert all(row["status"] == "COMPLETED" for row in rows)
    assert (directory / TRIALS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = json.loads((directory / BEST_FILE).read_text())
    assert best["_val_accuracy"] == max(float(row["val_accuracy"]) for row in rows)
    assert best["seed"] == SEED and best["model"] == "mlp"

    repository = tmp_path / "repo"
    trained = CliRunner().invoke(
        app,
        [
            "train", "--config", str(directory / BEST_FILE), "--model-repository",
            str(repository), "--output-dir", str(tmp_path / "runs"), "--min-accuracy", "0",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output[-3000:]
    version_dir = Path(trained.stdout.strip().splitlines()[-1])
    metadata = json.loads((version_dir / METADATA_PATH).read_text())
    hyperparameters = metadata["hyperparameters"]
    assert hyperparameters["units"] == best["units"]
    assert hyperparameters["batch_size"] == best["batch_size"]
    assert metadata["metrics"]["accuracy"] == pytest.approx(best["_test_accuracy"], abs=0.01)

    # The same directory again, one more trial allowed: the two done are not redone; and
    # the best is exported through the gate.
    exported = tmp_path / "exported"
    resumed = tune(
        directory, 3, "--export-best", "--model-repository", str(exported), "--min-accuracy", "0"
    )
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert "resuming" in resumed.stdout and "2 trial(s) already done" in resumed.stdout
    assert len(trial_lines(resumed.stdout)) == 1
    with (directory / TRIALS_CSV).open() as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert resumed.stdout.strip().splitlines()[-1] == str(exported / "mnist" / "1")


def test_bad_choices_are_usage_errors(tmp_path: Path) -> None:
    result = tune(tmp_path, 1, "--objective", "loss")
    assert result.exit_code == 2
    assert "loss" in result.stderr
    result = CliRunner().invoke(app, ["tune", "--tuner", "bayes", "--directory", str(tmp_path)])
    assert result.exit_code == 2
