"""The SLO gate's verdicts and messages, from measured numbers."""

import json

import pytest

from loadtests.slo import RunSummary, SloThresholds, evaluate

THRESHOLDS = SloThresholds(p95_ms=100, p99_ms=250, max_failure_ratio=0.01)


def test_a_run_within_every_slo_passes_and_says_so():
    verdict = evaluate(RunSummary(requests=1000, failures=5, p95_ms=80, p99_ms=200), THRESHOLDS)

    assert verdict.passed
    assert verdict.message() == (
        "SLO met: p95 80.0 ms <= 100 ms, p99 200.0 ms <= 250 ms, "
        "failure ratio 0.0050 <= 0.01 (1000 requests)"
    )


def test_a_p99_breach_names_the_slo_and_the_measured_value():
    verdict = evaluate(RunSummary(requests=1000, failures=0, p95_ms=90, p99_ms=312.4), THRESHOLDS)

    assert not verdict.passed
    assert verdict.message() == "SLO breached: p99 312.4 ms > 250 ms"


def test_every_breached_slo_is_reported():
    verdict = evaluate(RunSummary(requests=200, failures=20, p95_ms=150, p99_ms=300), THRESHOLDS)

    assert verdict.breaches == (
        "p95 150.0 ms > 100 ms",
        "p99 300.0 ms > 250 ms",
        "failure ratio 0.1000 > 0.01 (20 of 200 requests failed)",
    )


def test_values_exactly_at_the_threshold_pass():
    summary = RunSummary(requests=100, failures=1, p95_ms=100, p99_ms=250)

    assert evaluate(summary, THRESHOLDS).passed


def test_a_run_without_requests_breaches_because_it_proved_nothing():
    verdict = evaluate(RunSummary(requests=0, failures=0, p95_ms=0, p99_ms=0), THRESHOLDS)

    assert verdict.message() == "SLO breached: no requests were made, so no SLO can be checked"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p95_ms": 0}, "latency SLOs must be positive"),
        ({"p99_ms": -5}, "latency SLOs must be positive"),
        ({"max_failure_ratio": 1.5}, "SLO_MAX_FAILURE_RATIO must be between 0 and 1"),
    ],
)
def test_impossible_thresholds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SloThresholds(**kwargs)


def test_the_verdict_is_saved_as_json_with_measured_values(tmp_path):
    verdict = evaluate(RunSummary(requests=10, failures=1, p95_ms=5, p99_ms=7), THRESHOLDS)
    path = tmp_path / "nested" / "load_slo.json"

    verdict.write_json(path)

    document = json.loads(path.read_text())
    assert document["passed"] is False
    assert document["breaches"] == ["failure ratio 0.1000 > 0.01 (1 of 10 requests failed)"]
    assert document["measured"]["failure_ratio"] == pytest.approx(0.1)
    assert document["thresholds"]["p99_ms"] == 250
