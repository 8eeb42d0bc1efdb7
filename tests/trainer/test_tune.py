"""`trainer tune`: a small grid search finishes, writes its table, and its best trial is
reproduced by `trainer train --config` at the same seed; a second run resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures.processes import PYTHON, REPO_ROOT, wait_until
from trainer.cli import app
from trainer.repository import METADATA_PATH
from trainer.tune import BEST_FILE, PROJECT, TRIALS_CSV, TRIALS_PNG

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


def read_trials(directory: Path) -> list[dict[str, str]]:
    """trials.csv as rows; empty until the first trial has ended."""
    path = directory / TRIALS_CSV
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def trial_status(directory: Path, trial_id: str) -> str | None:
    """The status KerasTuner recorded for a trial (RUNNING from the moment it starts)."""
    path = directory / PROJECT / f"trial_{trial_id}" / "trial.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None


def test_a_tune_killed_mid_trial_resumes_without_redoing_finished_trials(tmp_path: Path):
    """SIGKILL (no clean-up of any kind) while trial 1 runs; the same command again
    retries trial 1, runs trial 2, leaves trial 0 alone and writes the whole table."""
    directory = tmp_path / "tune"
    command = [
        PYTHON, "-m", "trainer", "tune", "--model", "mlp", "--tuner", "grid",
        "--max-trials", "3", "--epochs", "1", "--dataset", "offline", "--seed", str(SEED),
        "--directory", str(directory),
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "PUSHGATEWAY_URL"}

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        output = tmp_path / f"{name}.out"
        with output.open("w") as out, (tmp_path / f"{name}.err").open("w") as err:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        return process, output

    first, first_output = start("first")
    try:
        # Trial 0 is in the table, and trial 1 has started: kill it now, mid-trial.
        wait_until(
            lambda: (
                first.poll() is None
                and len(read_trials(directory)) == 1
                and trial_status(directory, "1") == "RUNNING"
            ),
            timeout=60,
            interval=0.05,
            message="trial 0 done and trial 1 running",
        )
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL, first_output.read_text()
    assert trial_status(directory, "1") == "RUNNING"  # killed before it could finish
    (done,) = read_trials(directory)
    assert (done["trial"], done["status"]) == ("0", "COMPLETED")

    second, second_output = start("second")
    try:
        assert second.wait(timeout=90) == 0, (tmp_path / "second.err").read_text()[-3000:]
    finally:
        second.kill()
    stdout = second_output.read_text()
    assert "1 trial(s) already done" in stdout, stdout
    ran = [line.split()[1] for line in trial_lines(stdout)]
    assert ran == ["1", "2"], stdout  # trial 1 retried, trial 2 new; trial 0 not redone

    rows = read_trials(directory)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" for row in rows)
    assert rows[0] == done  # trial 0's figures are the first run's, untouched
    searched = ("units", "dropout", "learning_rate", "batch_size", "augment_strength")
    combinations = {tuple(row[key] for key in searched) for row in rows}
    assert len(combinations) == 3  # three different grid points, none run twice
    best = json.loads((directory / BEST_FILE).read_text())
    assert best["_val_accuracy"] == max(float(row["val_accuracy"]) for row in rows)
