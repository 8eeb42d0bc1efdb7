"""Reading the prediction log: the summary's figures and the labelled-data loader, on a log
written with the gateway's own encoder (gateway/prediction_log.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from gateway.prediction_log import encode_record
from trainer.cli import app
from trainer.prediction_log_reader import load_labelled, summarize


def pixels(value: int) -> np.ndarray:
    return np.full((28, 28), value, dtype=np.uint8)


def encoded(value: int) -> str:
    return base64.b64encode(pixels(value).tobytes()).decode("ascii")


def write_log(directory: Path) -> None:
    """Version 1: 4 predictions (classes 3, 3, 5, 7), 3 labelled (2 correct); one feedback
    record lacks its input but its prediction was sampled. Version 2: one prediction."""
    lines = []
    for index, predicted in enumerate((3, 3, 5, 7)):
        record = {"type": "prediction", "prediction_id": f"p{index}", "model": "mnist"}
        record |= {"version": 1, "class": predicted}
        if index == 2:
            record["input"] = encoded(index)
        lines.append(encode_record(record))
    for index, (predicted, true, stored) in enumerate(((3, 3, True), (3, 8, True), (5, 5, False))):
        lines.append(
            encode_record(
                {
                    "type": "feedback", "prediction_id": f"p{index}", "model": "mnist",
                    "version": 1, "class": predicted, "true_label": true,
                    "correct": predicted == true, "input": encoded(index) if stored else None,
                    "shadow": {"version": 2, "class": true, "correct": True},
                }
            )
        )  # fmt: skip
    lines.append(
        encode_record(
            {"type": "prediction", "prediction_id": "q", "model": "mnist", "version": 2, "class": 1}
        )
    )
    directory.mkdir()
    (directory / "predictions-a-20260101T00-0000.ndjson").write_bytes(b"".join(lines[:5]))
    (directory / "predictions-b-20260101T01-0000.ndjson").write_bytes(b"".join(lines[5:]))


def test_summary_counts_versions_labels_accuracy_and_classes(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    write_log(log_dir)
    summary = summarize(log_dir)
    one = summary.versions[("mnist", 1)]
    assert (one.predictions, one.inputs_logged, one.labelled, one.correct) == (4, 1, 3, 2)
    assert one.labelled_share == 0.75 and one.accuracy == 2 / 3
    assert summary.versions[("mnist", 2)].predictions == 1
    assert summary.shadow_labelled == {("mnist", 2): (3, 3)}
    output = CliRunner().invoke(app, ["log", "summary", "--log-dir", str(log_dir)]).output
    assert "mnist            1           4       1        3  75.0%    66.7%" in output
    assert "shadow mnist v2: 3/3 labelled predictions correct (100.0%)" in output
    assert "predicted class mix: 0:0%  1:20%  2:0%  3:40%" in output


def test_the_loader_returns_each_labelled_input_once(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    write_log(log_dir)
    images, labels = load_labelled(log_dir)
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
    np.testing.assert_array_equal(images, np.stack([pixels(0), pixels(1), pixels(2)]))
    np.testing.assert_array_equal(labels, [3, 8, 5])
    assert len(load_labelled(log_dir, version=2)[1]) == 0


def test_summary_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["log", "summary", "--log-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
