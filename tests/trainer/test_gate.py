"""The quality gate: which rule refused, by how much, and exit code 3 with nothing exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.cli import app
from trainer.errors import EXIT_QUALITY_GATE, QualityGateError, exit_code_for
from trainer.gate import check_quality_gate
from trainer.repository import METADATA_PATH, VersionInfo, list_versions


def baseline(accuracy: float | None, version: int = 4) -> VersionInfo:
    metrics = {} if accuracy is None else {"accuracy": accuracy}
    return VersionInfo("mnist", version, Path(str(version)), {"metrics": metrics})


def test_gate_passes_a_good_model() -> None:
    check_quality_gate(0.95, min_accuracy=0.9, max_regression=0.02, baseline=baseline(0.96))
    check_quality_gate(0.95, min_accuracy=0.9, max_regression=0.02, baseline=None)
    check_quality_gate(0.95, min_accuracy=0.9, max_regression=0.0, baseline=baseline(None))


def test_gate_refuses_below_min_accuracy_and_says_by_how_much() -> None:
    with pytest.raises(QualityGateError) as refused:
        check_quality_gate(0.85, min_accuracy=0.9, max_regression=1.0, baseline=None)
    assert refused.value.rule == "min-accuracy"
    assert "0.8500 is below --min-accuracy 0.9000 by 0.0500" in str(refused.value)
    assert exit_code_for(refused.value) == EXIT_QUALITY_GATE == 3


def test_gate_refuses_a_regression_against_the_latest_version() -> None:
    with pytest.raises(QualityGateError) as refused:
        check_quality_gate(0.93, min_accuracy=0.9, max_regression=0.01, baseline=baseline(0.96))
    assert refused.value.rule == "max-regression"
    message = str(refused.value)
    assert "0.0300 below version 4's 0.9600" in message
    assert "--max-regression 0.0100" in message and "by 0.0200" in message


def test_gate_allows_a_regression_within_bounds() -> None:
    check_quality_gate(0.95, min_accuracy=0.9, max_regression=0.02, baseline=baseline(0.965))


def upload_figures(accuracy: float, eval_set: str = "upload-eval-v1-seed202026") -> dict:
    return {
        "eval_set": eval_set,
        "accuracy": accuracy,
        "printed_accuracy": accuracy + 0.02,
        "handwriting_accuracy": accuracy - 0.02,
    }


def with_upload(accuracy: float, upload: dict) -> VersionInfo:
    return VersionInfo("mnist", 4, Path("4"), {"metrics": {"accuracy": accuracy, "upload": upload}})


def test_gate_refuses_an_upload_like_regression() -> None:
    parent = with_upload(0.95, upload_figures(0.93))
    with pytest.raises(QualityGateError) as refused:
        check_quality_gate(0.96, 0.9, 0.01, parent, upload_figures(0.90))
    assert refused.value.rule == "max-upload-regression"
    message = str(refused.value)
    assert "upload-like accuracy 0.9000" in message and "0.0300 below version 4's 0.9300" in message
    assert "(printed 0.9200, handwriting 0.8800)" in message
    # Within bounds, or better, it passes.
    check_quality_gate(0.96, 0.9, 0.01, parent, upload_figures(0.925))
    check_quality_gate(0.96, 0.9, 0.01, parent, upload_figures(0.99))


def test_gate_compares_upload_figures_only_on_the_same_set() -> None:
    other_set = with_upload(0.95, upload_figures(0.99, eval_set="upload-eval-v0"))
    check_quality_gate(0.96, 0.9, 0.01, other_set, upload_figures(0.50))
    # A parent from before the upload-like set: nothing to compare.
    check_quality_gate(0.96, 0.9, 0.01, baseline(0.95), upload_figures(0.50))


def _train_args(repository: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", "offline", "--epochs", "1", "--seed", "5",
        "--model-repository", str(repository), "--output-dir", str(repository / "runs"),
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_refuses_a_weak_model_with_exit_code_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, _train_args(tmp_path, "--min-accuracy", "0.999"))
    assert result.exit_code == 3, result.output
    assert "quality gate refused export" in result.stderr
    assert "below --min-accuracy 0.9990 by" in result.stderr
    assert list_versions(tmp_path / "mnist") == []
    # The refused run's evidence is kept for whoever investigates.
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert {"metrics.json", "confusion_matrix.png", "learning_curves.png"} <= {
        p.name for p in run_dir.iterdir()
    }


@pytest.mark.slow
def test_cli_refuses_a_regression_against_the_recorded_accuracy(tmp_path: Path) -> None:
    previous = tmp_path / "mnist" / "1"
    (previous / METADATA_PATH).parent.mkdir(parents=True)
    (previous / METADATA_PATH).write_text(json.dumps({"metrics": {"accuracy": 0.9999}}))
    result = CliRunner().invoke(
        app, _train_args(tmp_path, "--min-accuracy", "0", "--max-regression", "0.01")
    )
    assert result.exit_code == 3, result.output
    assert "below version 1's 0.9999" in result.stderr
    assert list_versions(tmp_path / "mnist") == [1]


def test_cli_rejects_bad_options_with_usage_exit_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, _train_args(tmp_path, "--epochs", "0"))
    assert result.exit_code == 2
    assert "--epochs must be >= 1, got 0" in result.stderr
    result = CliRunner().invoke(
        app, ["train", "--dataset", "npz", "--model-repository", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--dataset npz needs --data-path" in result.stderr
