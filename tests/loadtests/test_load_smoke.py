"""`make load-smoke`: short Locust runs against the live stack (gateway over a model server).

One run with the default SLOs must pass and record every user type; one with an impossible
p99 must fail and name the breach. Both are short: the figures come from `make load`.
"""

import re

import httpx
import pytest

from .locust_runs import ALL_WEIGHTS_ZERO, run_locust

pytestmark = pytest.mark.slow

MODEL = "mnist"
PREDICT = f"/v1/models/{MODEL}/predict"
EVERY_REQUEST_NAME = [
    f"{PREDICT} [json]",
    f"{PREDICT} [b64]",
    f"{PREDICT}/image [png multipart]",
    f"{PREDICT}/image [jpeg body]",
    "/v1/feedback",
    f"/v1/models/{MODEL}",
    "/v1/models",
    "PredictionService/Predict",
]


def feedback_counted(metrics_text: str) -> float:
    """Sum of the gateway's gateway_feedback_total samples."""
    pattern = re.compile(r"^gateway_feedback_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(metrics_text))


def test_every_user_type_runs_within_the_default_slos(tmp_path, gateway, model_server):
    run = run_locust(
        tmp_path,
        gateway.url,
        env={
            **{weight: "1" for weight in ALL_WEIGHTS_ZERO},  # one user of each type
            "LOAD_GRPC_TARGET": model_server.grpc_target,
            "LOAD_FEEDBACK_SHARE": "0.5",
            "LOAD_SAMPLE_SIZE": "100",
            "LOAD_SPLIT_SEED": "7",  # the fixture model's held-out digits
            "LOAD_WAIT_MIN_SECONDS": "0.05",
            "LOAD_WAIT_MAX_SECONDS": "0.2",
        },
        users=5,
        run_time="6s",
    )

    assert run.returncode == 0, run.output[-4000:]
    stats = run.stats()
    counts = {
        name: int(stats[name]["Request Count"]) if name in stats else 0
        for name in EVERY_REQUEST_NAME
    }
    assert all(counts.values()), counts
    verdict = run.slo()
    assert verdict["passed"] and verdict["measured"]["failures"] == 0, run.output[-4000:]
    # Locust rewrites the CSV every second, so it may miss the calls that finish during the
    # stop; the verdict uses the final stats.
    assert verdict["measured"]["requests"] >= int(stats["Aggregated"]["Request Count"])
    assert "SLO met: p95" in run.output
    report = run.html.read_text()
    assert "PredictionService/Predict" in report and f"{PREDICT} [json]" in report
    # The feedback reached the gateway and was scored, not just sent.
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert feedback_counted(metrics) >= counts["/v1/feedback"]


def test_an_impossible_p99_fails_the_run_and_names_the_breach(tmp_path, gateway):
    run = run_locust(
        tmp_path,
        gateway.url,
        env={
            **ALL_WEIGHTS_ZERO,
            "LOAD_WEIGHT_JSON": "1",
            "LOAD_FEEDBACK_SHARE": "0",
            "SLO_P99_MS": "0.001",
        },
        users=2,
        run_time="3s",
    )

    assert run.returncode == 1, run.output[-4000:]
    measured = run.slo()["measured"]
    assert measured["requests"] > 0 and measured["failures"] == 0
    breach = f"p99 {measured['p99_ms']:.1f} ms > 0.001 ms"
    assert breach in run.slo()["breaches"]
    assert f"SLO breached: {breach}" in run.output
    # LOAD_WEIGHT_*=0 left every other user type out.
    assert set(run.stats()) == {f"{PREDICT} [json]", "Aggregated"}
