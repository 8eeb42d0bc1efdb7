"""The decision rules on hand-made evidence: wait for data, roll back on a failure,
advance after a whole window."""

from __future__ import annotations

import pytest

from rollout.analysis import Evidence, judge
from rollout.policy import Policy

POLICY = Policy.model_validate(
    {
        "model": "mnist",
        "shadow": {"window": "20s", "min_requests": 100, "min_agreement": 0.9},
        "canary": {"steps": [10, 50], "window": "20s", "min_requests": 50},
        "checks": {"accuracy": {"min_feedback": 40, "max_drop": 0.02}},
    }
)


def healthy(**changes) -> Evidence:
    values = dict(
        window="20s",
        window_seconds=20.0,
        candidate_requests=500,
        candidate_error_ratio=0.0,
        stable_error_ratio=0.0,
        candidate_p99_seconds=0.010,
        stable_p99_seconds=0.009,
        candidate_accuracy=0.95,
        stable_accuracy=0.94,
        candidate_feedback=200,
        stable_feedback=400,
        agreement=0.97,
        candidate_psi=0.05,
        stable_psi=0.04,
        candidate_drift_observations=500,
    )
    values.update(changes)
    return Evidence(**values)


def statuses(verdict) -> dict[str, str]:
    return {check.name: check.status for check in verdict.checks}


@pytest.mark.parametrize("stage", ["shadow", "canary"])
def test_healthy_evidence_advances_only_after_a_whole_window(stage: str) -> None:
    assert judge(healthy(), POLICY, stage, seconds_in_stage=5).decision == "wait"
    assert judge(healthy(), POLICY, stage, seconds_in_stage=21).decision == "advance"


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"candidate_error_ratio": 0.05}, "error_ratio"),
        ({"candidate_p99_seconds": 0.2}, "p99_latency"),
        ({"candidate_accuracy": 0.5}, "online_accuracy"),
        ({"candidate_psi": 0.9}, "drift_psi"),
    ],
)
def test_a_failed_check_on_enough_samples_rolls_back_at_once(changes, failed: str) -> None:
    verdict = judge(healthy(**changes), POLICY, "canary", seconds_in_stage=1)
    assert verdict.decision == "rollback"
    assert statuses(verdict)[failed] == "fail"


def test_too_few_requests_waits_even_when_the_numbers_look_bad() -> None:
    evidence = healthy(candidate_requests=10, candidate_error_ratio=1.0)
    verdict = judge(evidence, POLICY, "canary", seconds_in_stage=60)
    assert verdict.decision == "wait"
    assert statuses(verdict)["error_ratio"] == "wait"


def test_latency_within_the_slack_passes_whatever_the_ratio() -> None:
    evidence = healthy(candidate_p99_seconds=0.004, stable_p99_seconds=0.001)
    assert statuses(judge(evidence, POLICY, "canary", 60))["p99_latency"] == "pass"


def test_disagreement_rolls_back_a_shadow_only_while_labels_are_too_few() -> None:
    unlabelled = healthy(agreement=0.5, candidate_feedback=3)
    assert judge(unlabelled, POLICY, "shadow", 60).decision == "rollback"
    # With labels, accuracy decides: a better model disagrees where stable is wrong.
    labelled = healthy(agreement=0.5, candidate_accuracy=0.97, stable_accuracy=0.6)
    verdict = judge(labelled, POLICY, "shadow", 60)
    assert verdict.decision == "advance"
    assert statuses(verdict)["shadow_agreement"] == "skip"


def test_required_accuracy_waits_for_labels_and_never_promotes_without_them() -> None:
    policy = POLICY.model_copy(
        update={
            "checks": POLICY.checks.model_copy(
                update={"accuracy": POLICY.checks.accuracy.model_copy(update={"required": True})}
            )
        }
    )
    verdict = judge(healthy(candidate_feedback=5), policy, "canary", seconds_in_stage=3600)
    assert verdict.decision == "wait"
    assert statuses(verdict)["online_accuracy"] == "wait"


def test_drift_that_stable_sees_too_is_the_traffics_not_the_candidates() -> None:
    evidence = healthy(candidate_psi=0.6, stable_psi=0.55)
    assert statuses(judge(evidence, POLICY, "canary", 60))["drift_psi"] == "pass"
    # Traffic far from both references (seen in the e2e run: users' hollow digits against
    # MNIST references): the candidate's PSI on its 10% share differs from stable's by more
    # than 0.1, yet it is the traffic's drift.
    evidence = healthy(candidate_psi=5.48, stable_psi=5.24)
    assert statuses(judge(evidence, POLICY, "canary", 60))["drift_psi"] == "pass"


def test_drift_only_the_candidate_sees_fails_it() -> None:
    evidence = healthy(candidate_psi=0.6, stable_psi=0.1)
    verdict = judge(evidence, POLICY, "canary", 60)
    assert (verdict.decision, statuses(verdict)["drift_psi"]) == ("rollback", "fail")
