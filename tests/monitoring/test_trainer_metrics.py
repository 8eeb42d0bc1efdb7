"""Trainer metrics through a real Pushgateway into a real Prometheus.

The push uses the trainer's own code path (`trainer.metrics.push_training_metrics`, what
`python -m trainer train` calls when PUSHGATEWAY_URL is set). Prometheus scrapes the
Pushgateway with the job from monitoring/prometheus.yml and evaluates monitoring/rules.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.monitoring import Prometheus, start_prometheus_process

pytestmark = pytest.mark.slow

SERIES = ("trainer_eval_accuracy", "trainer_eval_loss", "trainer_train_duration_seconds")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pushgateway) -> Iterator[Prometheus]:
    """One Prometheus for the module: its first scrape waits ~5 s for target discovery.

    Each test pushes its own model name, so they do not see each other's series.
    """
    server = start_prometheus_process(
        tmp_path_factory.mktemp("prometheus-push"), {"pushgateway": pushgateway.address}
    )
    yield server
    server.stop()


def test_pushed_training_metrics_reach_prometheus_with_their_labels(
    pushgateway, prometheus: Prometheus
) -> None:
    from trainer.metrics import push_training_metrics

    assert push_training_metrics(pushgateway.url, "pushtest", 1, 0.93, 0.25, 12.5)

    # honor_labels keeps job="trainer" (not "pushgateway") and the model/version labels.
    result = prometheus.wait_for(
        'trainer_eval_accuracy{job="trainer",model="pushtest",version="1"}', timeout=30
    )
    assert float(result[0]["value"][1]) == pytest.approx(0.93)
    values = {
        name: prometheus.values(f'{name}{{job="trainer",model="pushtest",version="1"}}')
        for name in SERIES
    }
    assert [list(v.values()) for v in values.values()] == [[0.93], [0.25], [12.5]]
    recorded = prometheus.wait_for('model_version:trainer_eval_accuracy:max{model="pushtest"}')
    assert float(recorded[0]["value"][1]) == pytest.approx(0.93)


def test_offline_accuracy_of_an_older_version_survives_the_next_push(
    pushgateway, prometheus: Prometheus
) -> None:
    """v1 may still serve as `stable` after v2 is pushed: both offline figures stay."""
    from trainer.metrics import push_training_metrics

    assert push_training_metrics(pushgateway.url, "rollover", 1, 0.91, 0.3, 10.0)
    prometheus.wait_for('model_version:trainer_eval_accuracy:max{model="rollover",version="1"}')

    assert push_training_metrics(pushgateway.url, "rollover", 2, 0.95, 0.2, 11.0)
    prometheus.wait_for(
        'trainer_eval_accuracy{model="rollover"}',
        lambda result: sorted(s["metric"]["version"] for s in result) == ["1", "2"],
    )
    recorded = prometheus.wait_for(
        'model_version:trainer_eval_accuracy:max{model="rollover"}',
        lambda result: len(result) == 2,
    )
    by_version = {s["metric"]["version"]: float(s["value"][1]) for s in recorded}
    assert by_version == pytest.approx({"1": 0.91, "2": 0.95})


def test_upload_like_accuracy_reaches_prometheus_per_set(
    pushgateway, prometheus: Prometheus
) -> None:
    """The printed and handwriting figures arrive as one series each, and are recorded."""
    from trainer.metrics import push_training_metrics

    upload = {"printed_accuracy": 0.95, "handwriting_accuracy": 0.875}
    assert push_training_metrics(pushgateway.url, "uploadtest", 1, 0.97, 0.1, 9.0, upload=upload)

    def by_set(result: list) -> dict[str, float]:
        return {s["metric"]["set"]: float(s["value"][1]) for s in result}

    pushed = prometheus.wait_for(
        'trainer_eval_upload_accuracy{job="trainer",model="uploadtest",version="1"}',
        lambda result: len(result) == 2,
        timeout=30,
    )
    assert by_set(pushed) == pytest.approx({"printed": 0.95, "handwriting": 0.875})
    recorded = prometheus.wait_for(
        'model_version_set:trainer_eval_upload_accuracy:max{model="uploadtest",version="1"}',
        lambda result: len(result) == 2,
    )
    assert by_set(recorded) == pytest.approx({"printed": 0.95, "handwriting": 0.875})
