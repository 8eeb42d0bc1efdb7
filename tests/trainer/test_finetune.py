"""`trainer finetune` on a prediction log written by the gateway's own writer
(gateway/prediction_log.py), holding hollow "bubble" digits (trainer/styles.py) with their
labels: a better version with provenance, the gates' refusals, the no-op, a missing
model.keras."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gateway.prediction_log import LogFiles, encode_record
from tests.fixtures.repository import MODEL_NAME, export_version
from trainer.cli import app
from trainer.config import get_settings
from trainer.errors import EXIT_FAILURE, EXIT_QUALITY_GATE
from trainer.export import KERAS_MODEL_PATH
from trainer.finetune import is_held_out
from trainer.repository import METADATA_PATH, list_versions
from trainer.styles import style_digits

pytestmark = pytest.mark.slow

RECORDS = 300
START = 1_790_000_000.0
# Small and quick: the parent is a cnn fitted 3 epochs (an mlp's first dense layer, frozen,
# keeps too little of a hollow stroke for its head to learn from in a test's budget).
FAST = ["--epochs", "6", "--replay", "2000", "--dataset", "offline", "--min-records", "100"]


def write_labelled_log(
    log_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    start: float = START,
    prefix: str = "p",
    version: int = 1,
) -> None:
    """A prediction and a feedback record per image, through the gateway's LogFiles, with
    the fields the gateway writes (docs/PREDICTION_LOG.md); one second apart from `start`."""
    clock = [start]
    files = LogFiles(log_dir, f"test-{prefix}", 64 << 20, 1 << 30, 1e9, clock=lambda: clock[0])
    pixels = np.rint(images * 255.0).clip(0, 255).astype(np.uint8)
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        clock[0] = start + index
        raw = image.tobytes()
        shared = {
            "prediction_id": f"{prefix}-{index}", "model": MODEL_NAME, "version": version,
            "class": 0, "input": base64.b64encode(raw).decode("ascii"),
            "input_sha256": hashlib.sha256(raw).hexdigest(),
        }  # fmt: skip
        files.append(encode_record({"type": "prediction", "time": clock[0], **shared}))
        files.append(
            encode_record(
                {"type": "feedback", "time": clock[0] + 0.5, **shared, "true_label": int(label),
                 "correct": int(label) == 0, "issued_at": int(clock[0])}
            )
        )  # fmt: skip
    files.close()


def finetune(repository: Path, log_dir: Path, *extra: str):
    args = ["finetune", "--from-version", "latest", "--log-dir", str(log_dir)]
    args += ["--model-repository", str(repository), *FAST, *extra]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def style() -> tuple[np.ndarray, np.ndarray]:
    return style_digits(RECORDS, seed=3)


@pytest.fixture(scope="module")
def parent_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding mnist/1: a cnn fitted 3 epochs on the offline sample."""
    repository = tmp_path_factory.mktemp("parent") / "repo"
    export_version(repository, model="cnn", epochs=3)
    return repository


@pytest.fixture
def repository(parent_repository: Path, tmp_path: Path) -> Path:
    """A copy of the parent repository, to publish into."""
    copy = tmp_path / "repo"
    shutil.copytree(parent_repository, copy)
    return copy


@pytest.fixture(scope="module")
def finetuned(
    parent_repository: Path, style, tmp_path_factory, pushgateway
) -> tuple[Path, Path, object]:
    """One successful run, pushing to the session's Pushgateway: (repository, log dir,
    CLI result)."""
    base = tmp_path_factory.mktemp("finetuned")
    repository = base / "repo"
    shutil.copytree(parent_repository, repository)
    write_labelled_log(base / "log", *style)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUSHGATEWAY_URL", pushgateway.url)
        get_settings.cache_clear()
        try:
            result = finetune(repository, base / "log")
        finally:
            get_settings.cache_clear()
    return repository, base / "log", result


def test_finetune_beats_the_parent_on_held_out_records_and_records_provenance(
    finetuned, style
) -> None:
    repository, _, result = finetuned
    assert result.exit_code == 0, result.output
    assert list_versions(repository / MODEL_NAME) == [1, 2]
    version_dir = repository / MODEL_NAME / "2"
    assert "into version 2" in result.stdout and str(version_dir) in result.stdout
    metadata = json.loads((version_dir / METADATA_PATH).read_text())
    tuned = metadata["finetune"]
    held = sum(is_held_out(f"p-{i}", 0.2) for i in range(RECORDS))
    assert metadata["parent_version"] == 1
    assert metadata["version"] == 2
    assert (tuned["records"], tuned["holdout_records"]) == (RECORDS - held, held)
    assert tuned["window"] == [START + 0.5, START + RECORDS - 0.5]
    assert tuned["holdout_accuracy"] > tuned["parent_holdout_accuracy"]
    assert tuned["holdout_accuracy"] > 0.6 > tuned["parent_holdout_accuracy"]
    assert metadata["architecture"] == "cnn"
    # The last hidden Dense and the head (Keras numbers auto-named layers per process:
    # "dense", or "dense_17" after other tests built models).
    hidden, head = tuned["trainable_layers"]
    assert hidden.split("_")[0] == "dense" and head == "probabilities"
    assert metadata["metrics"]["accuracy"] > 0.8
    assert (version_dir / KERAS_MODEL_PATH).is_file()

    # The served signature reads the style better than the parent's does, on unseen digits.
    import tensorflow as tf

    images, labels = style_digits(RECORDS + 300, seed=3)
    unseen = tf.constant(images[RECORDS:])

    def accuracy(version: int) -> float:
        path = str(repository / MODEL_NAME / str(version))
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return float((serve(images=unseen)["classes"].numpy() == labels[RECORDS:]).mean())

    assert accuracy(2) > accuracy(1) + 0.1


def test_finetuned_version_pushes_its_upload_like_accuracy(finetuned, pushgateway) -> None:
    """Like a trained version, a fine-tuned one reaches Prometheus with all its figures."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    repository, _, result = finetuned
    assert result.exit_code == 0, result.output
    metadata = json.loads((repository / MODEL_NAME / "2" / METADATA_PATH).read_text())
    text = httpx.get(f"{pushgateway.url}/metrics", timeout=5).text
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("model") == MODEL_NAME and sample.labels.get("version") == "2"
    ]
    accuracy = {s.name: s.value for s in samples if s.name == "trainer_eval_accuracy"}
    upload = {s.labels["set"]: s.value for s in samples if s.name == "trainer_eval_upload_accuracy"}
    assert accuracy == {"trainer_eval_accuracy": pytest.approx(metadata["metrics"]["accuracy"])}
    recorded = metadata["metrics"]["upload"]
    assert upload == {
        "printed": pytest.approx(recorded["printed_accuracy"]),
        "handwriting": pytest.approx(recorded["handwriting_accuracy"]),
    }


def test_a_second_run_without_new_records_is_a_no_op(finetuned) -> None:
    repository, log_dir, _ = finetuned
    result = finetune(repository, log_dir)
    assert result.exit_code == 0, result.output
    assert "not enough labelled records" in result.stdout
    assert "0 newer than version 2's fine-tuning window" in result.stdout
    assert list_versions(repository / MODEL_NAME) == [1, 2]


def test_too_few_records_exports_nothing(repository: Path, style, tmp_path: Path) -> None:
    images, labels = style
    write_labelled_log(tmp_path / "log", images[:50], labels[:50])
    result = finetune(repository, tmp_path / "log")
    assert result.exit_code == 0, result.output
    assert f"50 in {tmp_path / 'log'}, --min-records 100; nothing exported" in result.stdout
    assert list_versions(repository / MODEL_NAME) == [1]


def test_nothing_to_gain_on_the_held_out_records_is_refused(
    repository: Path, style, tmp_path: Path
) -> None:
    """Every label is what the parent answered: it scores 1.0 on the held-out records,
    which no fine-tuned model can beat (strictly), so nothing is exported."""
    import keras

    images, _ = style
    parent = keras.saving.load_model(
        str(repository / MODEL_NAME / "1" / KERAS_MODEL_PATH), compile=False
    )
    answered = parent.predict(images, verbose=0).argmax(axis=1)
    write_labelled_log(tmp_path / "log", images, answered)
    result = finetune(repository, tmp_path / "log", "--epochs", "2")
    assert result.exit_code == EXIT_QUALITY_GATE, result.output
    assert "quality gate refused export" in result.output
    assert "is not above version 1's 1.0000" in result.output
    assert list_versions(repository / MODEL_NAME) == [1]
    assert not list((repository / MODEL_NAME).glob(".tmp-*"))


def test_an_mnist_regression_is_refused(repository: Path, style, tmp_path: Path) -> None:
    write_labelled_log(tmp_path / "log", *style)
    result = finetune(repository, tmp_path / "log", "--epochs", "1", "--min-accuracy", "0.999")
    assert result.exit_code == EXIT_QUALITY_GATE, result.output
    assert "below --min-accuracy 0.9990" in result.output
    assert list_versions(repository / MODEL_NAME) == [1]


def test_a_version_without_model_keras_is_a_clear_error(
    repository: Path, style, tmp_path: Path
) -> None:
    (repository / MODEL_NAME / "1" / KERAS_MODEL_PATH).unlink()
    write_labelled_log(tmp_path / "log", *style)
    result = finetune(repository, tmp_path / "log", "--from-version", "1")
    assert result.exit_code == EXIT_FAILURE
    assert "version 1 was exported before model.keras was saved" in result.output
    assert "retrain it" in result.output
    assert list_versions(repository / MODEL_NAME) == [1]


def test_from_version_stable_reads_the_label_the_rollout_controller_wrote(tmp_path: Path) -> None:
    from trainer.errors import ParentModelError
    from trainer.finetune import resolve_parent

    model_dir = tmp_path / MODEL_NAME
    for version in (1, 2, 3):
        (model_dir / str(version)).mkdir(parents=True)
    config = tmp_path / "models.config"
    config.write_text(
        "# Generated by the rollout controller (python -m rollout): edits are overwritten.\n"
        f'model_config_list {{ config {{ name: "{MODEL_NAME}" base_path: "/m" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 2 } '
        'version_labels { key: "canary" value: 3 } } }\n'
    )
    # The newest export (3) is a candidate: users are served 2.
    assert resolve_parent(model_dir, "stable", config).version == 2
    assert resolve_parent(model_dir, "latest", config).version == 3
    with pytest.raises(ParentModelError, match="no version label 'shadow'"):
        resolve_parent(model_dir, "shadow", config)


def test_a_label_without_a_model_config_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["finetune", "--log-dir", str(tmp_path), "--from-version", "stable"]
    )
    assert result.exit_code == 2
    assert "--model-config" in result.output
