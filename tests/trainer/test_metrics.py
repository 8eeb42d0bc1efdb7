"""Pushgateway metrics against a real Pushgateway, and a push failure never fails an export."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.processes import free_port
from trainer.config import Settings
from trainer.metrics import push_training_metrics
from trainer.repository import list_versions


def pushed_trainer_samples(url: str, model: str) -> list:
    """Every `trainer_*` sample the Pushgateway exposes for `model`."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("trainer_") and sample.labels.get("model") == model
    ]


def pushed_samples(url: str, model: str) -> dict[str, tuple[dict[str, str], float]]:
    return {s.name: (s.labels, s.value) for s in pushed_trainer_samples(url, model)}


def pushed_accuracy_samples(url: str, model: str) -> list:
    return [s for s in pushed_trainer_samples(url, model) if s.name == "trainer_eval_accuracy"]


def test_push_exposes_the_three_gauges_per_model_and_version(pushgateway) -> None:
    assert push_training_metrics(pushgateway.url, "pushtest", 3, 0.97, 0.1, 12.5)
    assert push_training_metrics(pushgateway.url, "pushtest-b", 1, 0.91, 0.3, 4.0)
    samples = pushed_samples(pushgateway.url, "pushtest")
    # Without an upload-like report there is no upload series (no made-up zero).
    assert set(samples) == {
        "trainer_eval_accuracy",
        "trainer_eval_loss",
        "trainer_train_duration_seconds",
    }
    labels, value = samples["trainer_eval_accuracy"]
    assert (labels["model"], labels["version"], labels["job"]) == ("pushtest", "3", "trainer")
    assert value == pytest.approx(0.97)
    assert samples["trainer_train_duration_seconds"][1] == pytest.approx(12.5)
    # Grouped by model: another model's push does not erase this one.
    assert pushed_samples(pushgateway.url, "pushtest-b")["trainer_eval_loss"][1] == 0.3

    # Grouped by version too: a newer version's push keeps the older version's figures,
    # which may still be serving as `stable`.
    # The session's Pushgateway is shared: this model name is used by no other test.
    assert push_training_metrics(pushgateway.url, "pushtest-versions", 3, 0.97, 0.1, 12.5)
    assert push_training_metrics(pushgateway.url, "pushtest-versions", 4, 0.98, 0.08, 11.0)
    accuracy_by_version = {
        sample.labels["version"]: sample.value
        for sample in pushed_accuracy_samples(pushgateway.url, "pushtest-versions")
    }
    assert accuracy_by_version == {"3": pytest.approx(0.97), "4": pytest.approx(0.98)}


def test_upload_like_accuracy_is_pushed_per_set(pushgateway) -> None:
    upload = {"printed_accuracy": 0.95, "handwriting_accuracy": 0.875, "accuracy": 0.9125}
    assert push_training_metrics(
        pushgateway.url, "pushtest-upload", 2, 0.97, 0.1, 9.0, upload=upload
    )
    by_set = {
        s.labels["set"]: (s.labels["version"], s.labels["job"], s.value)
        for s in pushed_trainer_samples(pushgateway.url, "pushtest-upload")
        if s.name == "trainer_eval_upload_accuracy"
    }
    assert by_set == {
        "printed": ("2", "trainer", pytest.approx(0.95)),
        "handwriting": ("2", "trainer", pytest.approx(0.875)),
    }
    # The MNIST figures are pushed beside them, in the same group.
    assert pushed_samples(pushgateway.url, "pushtest-upload")["trainer_eval_accuracy"][1] == 0.97


def test_push_failure_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="trainer.metrics"):
        assert not push_training_metrics(closed, "m", 1, 0.9, 0.2, 1.0, timeout=2)
    assert any("could not push training metrics" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_unreachable_pushgateway_does_not_fail_the_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trainer.pipeline import TrainConfig, run_training

    settings = Settings(pushgateway_url=f"http://127.0.0.1:{free_port()}")
    config = TrainConfig(
        dataset="offline", epochs=1, min_accuracy=0, model_repository=tmp_path,
        output_dir=tmp_path / "runs", settings=settings,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="trainer.metrics"):
        result = run_training(config)
    assert result.version_dir == tmp_path / "mnist" / "1"
    assert list_versions(tmp_path / "mnist") == [1]
    assert any("could not push training metrics" in r.getMessage() for r in caplog.records)


def test_recorded_metrics_of_every_version_are_pushed(pushgateway, trained_repository) -> None:
    from trainer.metrics import push_recorded_metrics
    from trainer.repository import describe_repository

    versions = describe_repository(trained_repository)["mnist"]
    assert push_recorded_metrics(pushgateway.url, trained_repository) == len(versions)
    pushed = {
        s.labels["version"]: s.value for s in pushed_accuracy_samples(pushgateway.url, "mnist")
    }
    # Other tests may push other versions of "mnist" to the shared Pushgateway.
    assert {str(v.version): pushed.get(str(v.version)) for v in versions} == {
        str(v.version): pytest.approx(v.accuracy) for v in versions
    }
    # The upload-like figures recorded in each version's metadata go too.
    upload = {
        (s.labels["version"], s.labels["set"]): s.value
        for s in pushed_trainer_samples(pushgateway.url, "mnist")
        if s.name == "trainer_eval_upload_accuracy"
    }
    for v in versions:
        recorded = v.metadata["metrics"]["upload"]
        assert upload[(str(v.version), "printed")] == pytest.approx(recorded["printed_accuracy"])
        assert upload[(str(v.version), "handwriting")] == pytest.approx(
            recorded["handwriting_accuracy"]
        )
