"""A real Prometheus against the live local stack: real traffic, real feedback, real rules.

The session's model server and gateway (tests/fixtures/serving.py, gateway.py) serve the
briefly trained `mnist/1`. A fresh Prometheus scrapes them and a Pushgateway every second
and evaluates monitoring/rules every second. The module sends predictions of real
held-out digits and feedback with a known mix of correct and incorrect labels, pushes
the served version's real evaluation metrics through the trainer's code, then each test
reads one part of the result through Prometheus's HTTP API.

Why the order: rate() only counts increases between samples Prometheus has seen, so every
series must exist at Prometheus's first scrape. Warm-up traffic and feedback go first; the
measured traffic goes after that scrape, and the online-accuracy rule must then equal the
measured mix exactly (both outcome series share scrape timestamps, so rate()'s
extrapolation cancels out of the ratio).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.monitoring import (
    MONITORING_DIR,
    Prometheus,
    require_binary,
    stack_targets,
    start_prometheus_process,
)

pytestmark = pytest.mark.slow

MODEL = "mnist"
WARMUP = (3, 1)  # correct, incorrect feedback sent before Prometheus starts
MEASURED = (9, 3)  # sent after its first scrape: online accuracy must read 9/12
TRAIN_SECONDS = 3.5
DASHBOARD = MONITORING_DIR / "grafana" / "dashboards" / "mnist-serving.json"


def predict(client: httpx.Client, images: np.ndarray) -> list[tuple[str, int, int]]:
    """POST real digits; return (prediction_id, predicted class, version) per image."""
    response = client.post(
        f"/v1/models/{MODEL}/predict",
        json={"instances": images.astype(int).tolist(), "value_range": "0-255"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return [(p["prediction_id"], p["class"], body["version"]) for p in body["predictions"]]


def send_feedback(client: httpx.Client, predictions, correct: int, incorrect: int) -> None:
    """Label the first `correct` predictions right and the next `incorrect` wrong."""
    assert len(predictions) >= correct + incorrect
    items = [{"prediction_id": pid, "label": cls} for pid, cls, _ in predictions[:correct]]
    items += [
        {"prediction_id": pid, "label": (cls + 1) % 10}
        for pid, cls, _ in predictions[correct : correct + incorrect]
    ]
    response = client.post("/v1/feedback", json=items)
    assert response.status_code == 200, response.text
    outcomes = [result["outcome"] for result in response.json()["results"]]
    assert outcomes == ["correct"] * correct + ["incorrect"] * incorrect


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The sample values, asserting there is at least one and none is NaN/Inf."""
    values = [float(sample["value"][1]) for sample in result]
    assert values and all(math.isfinite(v) for v in values), result
    return values


@dataclass
class ObservedStack:
    prometheus: Prometheus
    version: int
    accuracy: float
    loss: float
    feedback_scraped_at: float

    @property
    def selector(self) -> str:
        return f'model="{MODEL}",version="{self.version}"'


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory,
    pushgateway,
    gateway,
    model_server,
    trained_repository,
    mnist_test_images,
) -> Iterator[ObservedStack]:
    """Warm-up traffic, Prometheus started, measured traffic and pushes, all scraped."""
    # pushgateway comes first: without the binaries the module skips before the stack
    # (and its training) starts. Prometheus is checked here for the same reason.
    require_binary("PROMETHEUS_BIN", "prometheus")
    from trainer.metrics import push_training_metrics

    images, _ = mnist_test_images
    client = httpx.Client(base_url=gateway.url, timeout=30)
    warmup = predict(client, images[:4])
    send_feedback(client, warmup, *WARMUP)
    version = warmup[0][2]
    selector = f'model="{MODEL}",version="{version}"'

    prometheus = start_prometheus_process(
        tmp_path_factory.mktemp("prometheus-live"),
        stack_targets(gateway, model_server, pushgateway),
    )
    try:
        prometheus.wait_for(
            'up{job=~"gateway|model-server|pushgateway"} == 1', lambda result: len(result) == 3
        )
        baseline = prometheus.wait_for(
            f"gateway_feedback_total{{{selector}}}",
            lambda result: {s["metric"]["outcome"] for s in result} == {"correct", "incorrect"},
        )
        before = {s["metric"]["outcome"]: float(s["value"][1]) for s in baseline}

        measured = []
        for start in range(4, 16, 4):
            measured += predict(client, images[start : start + 4])
        send_feedback(client, measured, *MEASURED)
        version_dir = trained_repository / MODEL / str(version)
        metrics = json.loads((version_dir / "assets.extra" / "metadata.json").read_text())
        accuracy, loss = metrics["metrics"]["accuracy"], metrics["metrics"]["loss"]
        assert push_training_metrics(pushgateway.url, MODEL, version, accuracy, loss, TRAIN_SECONDS)

        expected = {
            "correct": before["correct"] + MEASURED[0],
            "incorrect": before["incorrect"] + MEASURED[1],
        }
        prometheus.wait_for(
            f"gateway_feedback_total{{{selector}}}",
            lambda result: (
                {s["metric"]["outcome"]: float(s["value"][1]) for s in result} == expected
            ),
        )
        # The scrape that carried the final counts (both series share its timestamp).
        stamps = prometheus.query(f"timestamp(gateway_feedback_total{{{selector}}})")
        scraped_at = max(float(sample["value"][1]) for sample in stamps)
        yield ObservedStack(prometheus, version, accuracy, loss, scraped_at)
    finally:
        client.close()
        prometheus.stop()


def test_online_accuracy_rule_equals_the_feedback_mix(observed: ObservedStack) -> None:
    rule = f"model_version:gateway_online_accuracy:ratio_rate5m{{{observed.selector}}}"
    # Wait for a rule evaluation that has seen the scrape with the final counts.
    observed.prometheus.wait_for(
        f"timestamp({rule})",
        lambda result: (
            bool(result) and float(result[0]["value"][1]) >= observed.feedback_scraped_at
        ),
    )
    online = finite_values(observed.prometheus.query(rule))
    assert online == [pytest.approx(MEASURED[0] / sum(MEASURED), abs=1e-9)]


@pytest.mark.parametrize("quantile", ["p50", "p95", "p99"])
def test_latency_quantiles_return_values(observed: ObservedStack, quantile: str) -> None:
    queries = [
        f'route:gateway_request_duration_seconds:{quantile}_rate5m{{route=~".*/predict"}}',
        f"model_version:gateway_upstream_duration_seconds:{quantile}_rate5m{{{observed.selector}}}",
        f"model_name_api:tf_serving_request_latency_seconds:{quantile}_rate5m"
        f'{{model_name="{MODEL}",API="Predict"}}',
    ]
    for query in queries:
        seconds = finite_values(observed.prometheus.wait_for_finite(query))
        assert all(0 < value < 30 for value in seconds), (query, seconds)


def test_request_rates_and_error_ratio_return_values(observed: ObservedStack) -> None:
    prometheus = observed.prometheus
    assert (
        finite_values(prometheus.wait_for_finite('job:gateway_requests:rate5m{job="gateway"}'))[0]
        > 0
    )
    routes = prometheus.wait_for_finite('route:gateway_requests:rate5m{route=~".*/predict"}')
    assert finite_values(routes)[0] > 0
    served = prometheus.wait_for_finite(
        f'model_name:tf_serving_requests:rate5m{{model_name="{MODEL}"}}'
    )
    assert finite_values(served)[0] > 0
    # Every request in the window succeeded: the ratio reads 0, not "no data".
    errors = prometheus.wait_for_finite('job:gateway_request_errors:ratio_rate5m{job="gateway"}')
    assert finite_values(errors) == [0.0]


def test_trainer_metrics_pushed_for_the_served_version_are_present(observed: ObservedStack) -> None:
    expected = {
        "trainer_eval_accuracy": observed.accuracy,
        "trainer_eval_loss": observed.loss,
        "trainer_train_duration_seconds": TRAIN_SECONDS,
    }
    for name, value in expected.items():
        result = observed.prometheus.wait_for(f'{name}{{job="trainer",{observed.selector}}}')
        assert finite_values(result) == [pytest.approx(value)], name
    offline = observed.prometheus.wait_for(
        f"model_version:trainer_eval_accuracy:max{{{observed.selector}}}"
    )
    assert finite_values(offline) == [pytest.approx(observed.accuracy)]


def test_every_rule_evaluates_without_error_on_real_data(observed: ObservedStack) -> None:
    # Bad joins (many-to-many matches) only fail at evaluation, with real label sets.
    observed.prometheus.wait_for_finite(
        f"model_version:gateway_online_accuracy:ratio_rate5m{{{observed.selector}}}"
    )
    groups = observed.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"]
    assert broken == []


def test_every_dashboard_query_runs(observed: ObservedStack) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    answered = 0
    for expr in exprs:
        # Grafana's variables, as "All" would fill them in.
        filled = expr.replace("$__rate_interval", "1m")
        filled = filled.replace("$model", ".*").replace("$version", ".*")
        answered += bool(observed.prometheus.query(filled))  # raises on a PromQL error
    # Canary and batching panels are empty on this stack; the rest must show data.
    assert answered >= len(exprs) // 2, f"only {answered} of {len(exprs)} queries had data"
