"""Shadow traffic against real processes: a model server with versions 1 (stable) and 2
(canary), a gateway shadowing 100% of its traffic to canary, a real Redis; and a
fault-injecting proxy (tests/fixtures/fault_proxy.py) that makes the canary hang or fail.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.processes import wait_until
from tests.fixtures.serving import launch_model_server
from tests.gateway.test_feedback_replicas import counter as metric
from tests.serving.helpers import publish_copy, write_model_config
from trainer.prediction_log_reader import LogReader

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/mnist/predict"
SHADOW = {"default_label": "stable", "shadow_label": "canary", "shadow_percent": 100}


def scrape(gateway) -> str:
    return httpx.get(gateway.url + "/metrics", timeout=5).text


@pytest.fixture(scope="module")
def two_versions(trained_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """A model server with mnist 1 (stable) and 2 (canary, a copy of 1), for the module."""
    root = tmp_path_factory.mktemp("two-versions")
    model_dir = root / "repository" / "mnist"
    publish_copy(trained_repository / "mnist" / "1", model_dir, 1)
    publish_copy(trained_repository / "mnist" / "1", model_dir, 2)
    config = write_model_config(
        root / "models.config", model_dir, labels={"stable": 1, "canary": 2}
    )
    server = launch_model_server(root, config_file=config)
    yield server
    server.process.stop()


def send(gateway, images: np.ndarray) -> tuple[dict, float]:
    started = time.perf_counter()
    response = httpx.post(
        gateway.url + PREDICT,
        json={"instances": images.astype(int).tolist(), "value_range": "0-255"},
        timeout=10,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json(), elapsed


def test_shadow_answers_stay_hidden_and_agreement_and_accuracy_are_counted(
    two_versions, redis_server, start_gateway, mnist_test_images, tmp_path: Path
) -> None:
    images, labels = mnist_test_images
    log_dir = tmp_path / "log"
    gateway = start_gateway(
        two_versions.grpc_target, redis_url=redis_server.url, log_dir=log_dir, **SHADOW
    )
    answers = [send(gateway, images[i : i + 2])[0] for i in range(0, 20, 2)]
    assert {answer["version"] for answer in answers} == {1}  # never the shadow's
    wait_until(
        lambda: metric(scrape(gateway), "gateway_shadow_requests_total", version="2") == 20,
        15,
        message="20 shadow outcomes",
    )
    text = scrape(gateway)
    # Version 2 is a copy of 1: it agrees on every digit.
    assert metric(text, "gateway_shadow_requests_total", version="2", outcome="agree") == 20
    assert metric(text, "gateway_shadow_duration_seconds_count", version="2") == 10
    # The shadow's calls are not the served versions' traffic.
    assert metric(text, "gateway_upstream_duration_seconds_count", version="2") == 0
    assert metric(text, "gateway_upstream_duration_seconds_count", version="1") == 10

    predictions = [p for answer in answers for p in answer["predictions"]]
    feedback = [
        {"prediction_id": p["prediction_id"], "label": int(y)}
        for p, y in zip(predictions[:8], labels[:8], strict=True)
    ]
    assert httpx.post(gateway.url + "/v1/feedback", json=feedback, timeout=10).status_code == 200
    correct = sum(p["class"] == y for p, y in zip(predictions[:8], labels[:8], strict=True))
    text = scrape(gateway)
    assert metric(text, "gateway_shadow_feedback_total", version="2", outcome="correct") == correct
    assert metric(text, "gateway_shadow_feedback_total", version="2") == 8
    assert metric(text, "gateway_feedback_total", version="2") == 0  # never the served metric

    def logged() -> list[dict]:
        return [r for r in LogReader(log_dir).records() if r["type"] in ("shadow", "feedback")]

    wait_until(lambda: len(logged()) == 28, 10, message="20 shadow and 8 feedback records")
    records = logged()
    shadows = [r for r in records if r["type"] == "shadow"]
    assert {(r["version"], r["served_version"], r["label"]) for r in shadows} == {(2, 1, "canary")}
    scored = [r for r in records if r["type"] == "feedback"]
    assert all(r["shadow"]["version"] == 2 for r in scored)


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_a_hung_or_failing_shadow_never_delays_or_fails_a_client(
    mode, two_versions, start_fault_proxy, start_gateway, mnist_test_images
) -> None:
    images, _ = mnist_test_images
    proxy = start_fault_proxy(two_versions.grpc_target, "canary", mode)
    gateway = start_gateway(
        proxy.grpc_target, shadow_timeout_seconds=3, shadow_max_concurrency=2, **SHADOW
    )
    latencies = []
    for index in range(20):
        answer, elapsed = send(gateway, images[index : index + 1])
        assert answer["version"] == 1
        latencies.append(elapsed)
    # A shadow call that hangs lasts 3 s; no client waited anywhere near that.
    assert max(latencies) < 1.5, latencies

    def outcomes() -> dict[str, float]:
        text = scrape(gateway)
        return {
            outcome: metric(text, "gateway_shadow_requests_total", outcome=outcome)
            for outcome in ("agree", "disagree", "error", "dropped")
        }

    wait_until(lambda: sum(outcomes().values()) == 20, 15, message="20 shadow outcomes")
    counted = outcomes()
    assert counted["agree"] == counted["disagree"] == 0
    if mode == "hang":
        # Two hung calls fill the bound; the copies behind them are dropped, not queued.
        assert counted["dropped"] >= 10 and counted["error"] >= 2, counted
    else:
        # Failing calls end at once, but on a busy machine two may still be in flight when
        # the next copy comes, so some are dropped; each is one or the other.
        assert counted["error"] == 20 - counted["dropped"] and counted["error"] >= 2, counted
