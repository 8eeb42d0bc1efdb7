"""Drift statistics: the gateway's live definitions equal the trainer's reference ones, the
model server serves each version's reference_stats signature, and predictions are counted
in its bins."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.config import Settings
from gateway.drift import STATISTICS, live_statistics, parse_reference
from gateway.metrics import GatewayMetrics
from gateway.tfs_protos import load_messages
from gateway.upstream import ServingClient
from tests.gateway.fakes import FakeUpstream, expected_class
from trainer.reference_stats import compute_reference, input_statistics, signature_outputs


def kinds_of_input(images: np.ndarray) -> np.ndarray:
    """Real digits, inverted ones, digits scaled by 1/65535, a blank and a full image."""
    digits = images[:50].astype(np.float32) / 255.0
    return np.concatenate(
        [
            digits,
            1.0 - digits,
            images[:20].astype(np.float32) / 65535.0,
            np.zeros((1, 28, 28), np.float32),
            np.ones((1, 28, 28), np.float32),
        ]
    )


def test_the_gateway_and_the_trainer_define_the_statistics_alike(mnist_test_images) -> None:
    batch = kinds_of_input(mnist_test_images[0])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=len(batch))
    classes, confidences = probabilities.argmax(axis=1), probabilities.max(axis=1)
    live = live_statistics(batch, classes, confidences)
    reference = input_statistics(batch)
    assert set(live) == set(STATISTICS)
    for name, values in reference.items():
        np.testing.assert_allclose(live[name], values, err_msg=name)
    # Bins built by the trainer from these values hold exactly these values.
    outputs = signature_outputs(compute_reference(batch, probabilities))
    for statistic, (cuts, proportions) in parse_reference(outputs).items():
        bins = np.searchsorted(cuts, live[statistic], side="right")
        shares = np.bincount(bins, minlength=len(proportions)) / len(batch)
        np.testing.assert_allclose(shares, proportions, atol=1e-6, err_msg=statistic)


def test_the_model_server_serves_the_versions_reference(model_server) -> None:
    settings = Settings(_env_file=None, serving_target=model_server.grpc_target)
    client = ServingClient(settings, load_messages(), GatewayMetrics())

    async def fetch() -> dict[str, np.ndarray]:
        await client.start()
        try:
            return await client.reference_stats("mnist", 1, "reference_stats")
        finally:
            await client.close()

    parsed = parse_reference(asyncio.run(fetch()))
    assert set(parsed) == set(STATISTICS)
    for statistic, (cuts, proportions) in parsed.items():
        assert np.all(np.diff(cuts) > 0), statistic
        assert proportions.sum() == pytest.approx(1.0, abs=1e-5), statistic
    assert len(parsed["class"][1]) == 10


def test_predictions_are_counted_in_the_reference_bins(inprocess, mnist_test_images) -> None:
    images = mnist_test_images[0][:40].astype(np.float32) / 255.0
    upstream = FakeUpstream()
    probabilities = np.full((len(images), 10), 0.01)
    probabilities[np.arange(len(images)), expected_class(images)] = 0.91
    upstream.reference = signature_outputs(compute_reference(images, probabilities))
    client = inprocess(upstream=upstream)
    body = {"instances": images[:1].tolist()}
    # The first prediction asks for the reference; then every prediction is counted.
    assert client.post("/v1/models/mnist/predict", json=body).status_code == 200
    for start in range(0, 40, 8):
        chunk = {"instances": images[start : start + 8].tolist()}
        assert client.post("/v1/models/mnist/predict", json=chunk).status_code == 200
    text = client.get("/metrics").text
    counted = {}
    for line in text.splitlines():
        if line.startswith("gateway_drift_observations_total{"):
            statistic = line.split('statistic="')[1].split('"')[0]
            counted[statistic] = counted.get(statistic, 0.0) + float(line.split()[-1])
    assert counted == {statistic: 40.0 for statistic in STATISTICS}
    shares = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gateway_drift_reference_ratio{") and 'statistic="class"' in line
    ]
    assert sum(shares) == pytest.approx(1.0)
