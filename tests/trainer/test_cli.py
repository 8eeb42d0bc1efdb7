"""`python -m trainer` as users run it: list, --if-empty, and one full train in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.fixtures.processes import REPO_ROOT
from trainer.cli import app, merge_config_file
from trainer.config import get_settings
from trainer.repository import METADATA_PATH, list_versions


def run_trainer(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=timeout,
    )


def test_list_shows_versions_with_recorded_accuracy(trained_repository: Path) -> None:
    metadata = json.loads((trained_repository / "mnist" / "1" / METADATA_PATH).read_text())
    result = run_trainer("list", "--model-repository", str(trained_repository), timeout=60)
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1].split()
    assert row[:3] == ["mnist", "1", "mlp"]
    assert row[3] == f"{metadata['metrics']['accuracy']:.4f}"


def test_list_and_help_do_not_import_tensorflow(trained_repository: Path) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from trainer.cli import app; "
        f"r = CliRunner().invoke(app, ['list', '--model-repository', {str(trained_repository)!r}]);"
        "h = CliRunner().invoke(app, ['train', '--help']); "
        "print(r.exit_code, h.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.stdout.split() == ["0", "0", "False", "False"], result.stderr


def test_list_of_an_empty_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["list", "--model-repository", str(tmp_path)])
    assert result.exit_code == 0
    assert f"no models in {tmp_path}" in result.stdout


def test_if_empty_keeps_an_existing_model(trained_repository: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--if-empty", "--model-repository", str(trained_repository)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(trained_repository / "mnist" / "1")
    assert list_versions(trained_repository / "mnist") == [1]


@pytest.mark.slow
def test_train_command_exports_pushes_and_logs(
    tmp_path: Path, pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (CliRunner) rather than a second TensorFlow process: the same code path
    # from argument parsing to exit code, without paying TensorFlow's import twice.
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    get_settings.cache_clear()
    repository, tensorboard = tmp_path / "repo", tmp_path / "tb"
    try:
        result = CliRunner().invoke(
            app,
            [
                "train", "--dataset", "offline", "--model", "mlp", "--epochs", "1",
                "--model-repository", str(repository), "--model-name", "clitest",
                "--output-dir", str(tmp_path / "runs"), "--tensorboard-dir", str(tensorboard),
                "--min-accuracy", "0.5",
            ],
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output[-3000:]
    version_dir = Path(result.stdout.strip().splitlines()[-1])  # the contract: last line
    assert version_dir == repository / "clitest" / "1"
    metadata = json.loads((version_dir / METADATA_PATH).read_text())
    assert metadata["model_name"] == "clitest"
    assert list(tensorboard.rglob("events.out.tfevents.*"))

    exposed = httpx.get(f"{pushgateway.url}/metrics", timeout=5).text
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(exposed)
        for sample in family.samples
        if sample.labels.get("model") == "clitest"
    }
    accuracy = samples["trainer_eval_accuracy"]
    assert accuracy.labels["version"] == "1" and accuracy.labels["job"] == "trainer"
    assert accuracy.value == pytest.approx(metadata["metrics"]["accuracy"])
    assert samples["trainer_eval_loss"].value == pytest.approx(metadata["metrics"]["loss"])
    assert samples["trainer_train_duration_seconds"].value > 0
    upload = {
        sample.labels["set"]: sample.value
        for family in text_string_to_metric_families(exposed)
        for sample in family.samples
        if sample.name == "trainer_eval_upload_accuracy" and sample.labels["model"] == "clitest"
    }
    recorded = metadata["metrics"]["upload"]
    assert upload == {
        "printed": pytest.approx(recorded["printed_accuracy"]),
        "handwriting": pytest.approx(recorded["handwriting_accuracy"]),
    }


def test_the_command_line_wins_over_a_config_file(tmp_path: Path) -> None:
    probe = typer.Typer()
    merged: dict = {}

    @probe.command()
    def run(ctx: typer.Context, epochs: int = 5, seed: int = 42, config: Path | None = None):
        options = {"epochs": epochs, "seed": seed}
        merge_config_file(ctx, options, config)
        merged.update(options)

    config = tmp_path / "best.json"
    config.write_text('{"epochs": 3, "seed": 7}')
    result = CliRunner().invoke(probe, ["--epochs", "1", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert merged == {"epochs": 1, "seed": 7}  # the flag given wins; the file fills the rest
