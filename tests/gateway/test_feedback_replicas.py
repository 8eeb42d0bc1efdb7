"""Feedback deduplication across real gateway replicas sharing a real Redis.

Two `python -m gateway` processes over the session model server and one redis-server:
an id scored on one replica is a duplicate on the other, and Redis going away turns
feedback, and only feedback, into a 503 that says to retry.
"""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from tests.fixtures.processes import PYTHON, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.slow

PREDICT = "/v1/models/mnist/predict"
ONE = {"instances": [np.full((28, 28), 0.2).tolist()]}


def counter(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(rf"^{name}\{{([^}}]*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def prediction_ids(url: str, count: int) -> list[str]:
    body = {"instances": [np.full((28, 28), i / 100).tolist() for i in range(count)]}
    response = httpx.post(url + PREDICT, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return [p["prediction_id"] for p in response.json()["predictions"]]


def test_an_id_scored_on_one_replica_is_a_duplicate_on_another(
    model_server, redis_server, start_gateway
) -> None:
    one = start_gateway(model_server.grpc_target, redis_url=redis_server.url)
    two = start_gateway(model_server.grpc_target, redis_url=redis_server.url)
    first, second = prediction_ids(one.url, 2)
    item = {"prediction_id": first, "label": 3}

    scored = httpx.post(one.url + "/v1/feedback", json=item, timeout=10)
    replayed = [httpx.post(two.url + "/v1/feedback", json=item, timeout=10) for _ in range(3)]
    mixed = httpx.post(
        two.url + "/v1/feedback", json=[item, {"prediction_id": second, "label": 3}], timeout=10
    )

    assert scored.status_code == 200 and scored.json()["accepted"] == 1
    assert [r.status_code for r in replayed] == [409, 409, 409]
    assert replayed[0].json()["error"]["code"] == "duplicate_feedback"
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["results"][0]["outcome"] == "duplicate"
    assert mixed.json()["accepted"] == 1
    texts = [httpx.get(g.url + "/metrics", timeout=5).text for g in (one, two)]
    assert sum(counter(t, "gateway_feedback_total") for t in texts) == 2
    duplicates = sum(
        counter(t, "gateway_feedback_rejected_total", reason="duplicate") for t in texts
    )
    assert duplicates == 4
    assert httpx.get(two.url + "/readyz", timeout=5).json()["feedback_dedup"] == "redis"


def test_without_redis_feedback_is_a_503_and_predictions_go_on(
    model_server, start_redis, start_gateway
) -> None:
    redis = start_redis()
    gateway = start_gateway(model_server.grpc_target, redis_url=redis.url)
    (before,) = prediction_ids(gateway.url, 1)
    redis.process.stop()

    refused = httpx.post(
        gateway.url + "/v1/feedback", json={"prediction_id": before, "label": 1}, timeout=10
    )
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "feedback_store_unavailable"
    assert str(redis.port) not in refused.text
    assert httpx.post(gateway.url + PREDICT, json=ONE, timeout=10).status_code == 200
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and any("Redis" in w for w in ready.json()["warnings"])

    start_redis(port=redis.port)  # Redis is back: the same feedback is counted now, once
    wait_until(
        lambda: (
            httpx.post(
                gateway.url + "/v1/feedback", json={"prediction_id": before, "label": 1}, timeout=10
            ).status_code
            == 200
        ),
        15,
        0.2,
        "feedback once Redis is back",
    )
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
    assert counter(text, "gateway_feedback_total") == 1


def test_production_without_redis_refuses_to_start_unless_local_is_chosen(tmp_path) -> None:
    env = {
        "GATEWAY_ENV": "production",
        "GATEWAY_FEEDBACK_SECRET": "0123456789abcdef0123",
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_API_KEYS": "prodkey-AAAA",
    }
    refused = ManagedProcess([PYTHON, "-m", "gateway"], tmp_path / "refused.log", env=env).start()
    assert refused.process.wait(30) == 2
    log = refused.log_tail()
    assert "GATEWAY_REDIS_URL" in log and "GATEWAY_FEEDBACK_DEDUP=local" in log
    assert "prodkey-AAAA" not in log


@pytest.mark.parametrize(
    "bad", [{"GATEWAY_FEEDBACK_SECRET": "short-Zq9x"}, {"GATEWAY_PORT": "not-a-port"}]
)
def test_a_settings_error_never_prints_a_secret(tmp_path, bad) -> None:
    """Issue 15 #13: pydantic printed the whole input, keys and secret included."""
    env = {
        "GATEWAY_ENV": "production",
        "GATEWAY_API_KEYS": "prodkey-AAAA",
        "GATEWAY_FEEDBACK_SECRET": "0123456789abcdef-Wv7k",
        "GATEWAY_METRICS_API_KEYS": "scrapekey-BBBB",
        "GATEWAY_REDIS_URL": "redis://:redispass-CCCC@127.0.0.1:1/0",
        **bad,
    }
    process = ManagedProcess([PYTHON, "-m", "gateway"], tmp_path / "gw.log", env=env).start()
    assert process.process.wait(30) == 2
    log = process.log_tail()
    assert "invalid configuration" in log
    for secret in (
        "prodkey-AAAA",
        "Zq9x",
        "Wv7k",
        "scrapekey-BBBB",
        "redispass-CCCC",
        "not-a-port",
    ):
        assert secret not in log, f"{secret} was printed:\n{log}"
    assert ("GATEWAY_FEEDBACK_SECRET" in log) or ("GATEWAY_PORT" in log)
