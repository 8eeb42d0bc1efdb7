"""Drift against a real Prometheus: the kinds of bad traffic that really happen raise PSI
and the PredictionDriftHigh alert; ordinary MNIST traffic leaves both quiet.

One model server serves the fixture model under four names, one per kind of traffic, so
the four kinds run at once and each has series of its own:
- `good`: held-out MNIST digits as they are;
- `inverted`: the same digits white on black sent as black on white (255 - pixel);
- `scaled`: 0-255 data divided by 65,535 and sent as 0-1, so nearly black;
- `oneclass`: digits of one class only.
The drift rules are monitoring/templates/drift.yml rendered with a 20 s window and a 5 s
`for:` instead of 30 m and 15 m (the only change from production).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.monitoring import (
    render_rule_templates,
    require_binary,
    start_prometheus_process,
)
from tests.fixtures.processes import wait_until

pytestmark = pytest.mark.slow

WINDOW, FOR = "20s", "5s"
WINDOW_SECONDS = 20
PSI = f"model_version_statistic:gateway_drift_psi:rate{WINDOW}"
THRESHOLD = 0.25  # the alert's, in monitoring/templates/drift.yml
KINDS = ("good", "inverted", "scaled", "oneclass")
BATCH = 16
INPUT_STATISTICS = {"ink_fraction", "mean_intensity"}


def four_models_config(path: Path, base_path: Path) -> Path:
    configs = "".join(
        "  config {\n"
        f'    name: "{kind}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for kind in KINDS
    )
    path.write_text("model_config_list {\n" + configs + "}\n")
    return path


def body(kind: str, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict:
    pool = np.flatnonzero(labels == 1) if kind == "oneclass" else np.arange(len(images))
    picked = images[rng.choice(pool, size=BATCH)].astype(np.float64)
    if kind == "inverted":
        picked = 255.0 - picked
    if kind == "scaled":
        return {"instances": (picked / 65535.0).tolist(), "value_range": "0-1"}
    return {"instances": picked.astype(int).tolist(), "value_range": "0-255"}


@pytest.fixture
def drifting_stack(
    trained_repository, start_model_server, start_gateway, mnist_test_images, tmp_path: Path
) -> Iterator:
    require_binary("PROMETHEUS_BIN", "prometheus")
    config = four_models_config(tmp_path / "models.config", trained_repository / "mnist")
    server = start_model_server(config_file=config)
    gateway = start_gateway(
        server.grpc_target, models=",".join(KINDS), default_model="good", log_enabled="false"
    )
    rules = render_rule_templates(tmp_path / "rules", window=WINDOW, **{"for": FOR})
    prometheus = start_prometheus_process(
        tmp_path / "prometheus", {"gateway": gateway.url.removeprefix("http://")}, rules_dir=rules
    )
    images, labels = mnist_test_images
    stop = threading.Event()
    failures: list[str] = []

    def traffic() -> None:
        rng = np.random.default_rng(17)
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            while not stop.is_set():
                for kind in KINDS:
                    response = client.post(
                        f"/v1/models/{kind}/predict", json=body(kind, images, labels, rng)
                    )
                    if response.status_code != 200:
                        failures.append(f"{kind}: {response.status_code} {response.text[:200]}")
                stop.wait(0.2)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        yield prometheus, time.time()
    finally:
        stop.set()
        sender.join(15)
        prometheus.stop()
    assert failures == []


def psi_by_statistic(prometheus, kind: str) -> dict[str, float]:
    return {
        sample["metric"]["statistic"]: float(sample["value"][1])
        for sample in prometheus.query(f'{PSI}{{model="{kind}"}}')
    }


def test_bad_traffic_raises_psi_and_the_alert_and_good_traffic_stays_quiet(drifting_stack) -> None:
    prometheus, started = drifting_stack
    alerts = 'ALERTS{alertname="PredictionDriftHigh"}'
    for kind in ("inverted", "scaled", "oneclass"):
        prometheus.wait_for(
            f'{alerts[:-1]},model="{kind}",alertstate=~"pending|firing"}}', timeout=90
        )
        psi = psi_by_statistic(prometheus, kind)
        print(f"PSI {kind}: " + ", ".join(f"{s} {v:.2f}" for s, v in sorted(psi.items())))
        drifted = {s for s, value in psi.items() if value > THRESHOLD}
        if kind == "oneclass":
            assert "class" in drifted, drifted
        else:  # the input itself is wrong: its ink and intensity moved
            assert drifted >= INPUT_STATISTICS, drifted
    # Judge the good traffic on windows full of it: two windows after it started.
    wait_until(
        lambda: time.time() > started + 2 * WINDOW_SECONDS, 90, message="two windows of traffic"
    )
    good = psi_by_statistic(prometheus, "good")
    print("PSI good: " + ", ".join(f"{s} {v:.3f}" for s, v in sorted(good.items())))
    assert set(good) >= {"class", "confidence", "ink_fraction", "bbox_size"}
    assert max(good.values()) < THRESHOLD, good
    worst = prometheus.query(f'max(max_over_time({PSI}{{model="good"}}[{WINDOW}]))')
    assert float(worst[0]["value"][1]) < THRESHOLD
    assert prometheus.query(f'{alerts[:-1]},model="good"}}') == []
