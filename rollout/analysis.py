"""One analysis: the candidate against stable over a window, as a verdict with evidence.

`collect_evidence` asks Prometheus (through the recording rules, re-windowed);
`judge` is pure: evidence and policy in, a verdict out, so every rule of the decision is
tested on hand-made numbers. The rules:

- a check with too few samples *waits*; a stage never advances past a waiting check
  (unless it is optional and says so: accuracy without `required`, drift);
- any check that fails on enough samples rolls the candidate back, at once;
- otherwise the stage advances when its whole window lies inside the stage.

Shadow agreement stands in for accuracy while labels are too few: a better model
disagrees with stable exactly where stable is wrong, so once accuracy has its labels,
accuracy decides and agreement is recorded for the audit only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from rollout.policy import Policy
from rollout.queries import Prometheus, RecordingRules

Stage = Literal["shadow", "canary"]
CheckStatus = Literal["pass", "fail", "wait", "skip"]
Decision = Literal["advance", "rollback", "wait"]


# The recording rules the analysis reads (monitoring/rules), by what they measure: the
# served traffic's, and the shadow copies' (a candidate in shadow answers only those).
SERVED_RECORDS = {
    "requests": "model_version:gateway_upstream_requests:rate5m",
    "errors": "model_version:gateway_upstream_errors:ratio_rate5m",
    "p99": "model_version:gateway_upstream_duration_seconds:p99_rate5m",
    "accuracy": "model_version:gateway_online_accuracy:ratio_rate5m",
    "feedback": "model_version:gateway_feedback:rate5m",
}
SHADOW_RECORDS = {
    "requests": "model_version:gateway_shadow_requests:rate5m",
    "errors": "model_version:gateway_shadow_errors:ratio_rate5m",
    "p99": "model_version:gateway_shadow_duration_seconds:p99_rate5m",
    "accuracy": "model_version:gateway_shadow_online_accuracy:ratio_rate5m",
    "feedback": "model_version:gateway_shadow_feedback:rate5m",
}
AGREEMENT_RECORD = "model_version:gateway_shadow_agreement:ratio_rate5m"
PSI_RECORD = "model_version_statistic:gateway_drift_psi:rate30m"
DRIFT_OBSERVATIONS_RECORD = "model_version:gateway_drift_observations:rate30m"
# Checked at start-up, so a rules directory that lacks one is a clear error rather than
# a failed pass.
REQUIRED_RECORDS = (
    *SERVED_RECORDS.values(),
    *SHADOW_RECORDS.values(),
    AGREEMENT_RECORD,
    PSI_RECORD,
    DRIFT_OBSERVATIONS_RECORD,
)


@dataclass
class Evidence:
    """What Prometheus said about the candidate and stable over one window (None: no
    series, or 0/0). Counts are events in the window."""

    window: str
    window_seconds: float
    candidate_requests: float = 0.0
    candidate_error_ratio: float | None = None
    stable_error_ratio: float | None = None
    candidate_p99_seconds: float | None = None
    stable_p99_seconds: float | None = None
    candidate_accuracy: float | None = None
    stable_accuracy: float | None = None
    candidate_feedback: float = 0.0
    stable_feedback: float = 0.0
    agreement: float | None = None
    candidate_psi: float | None = None
    stable_psi: float | None = None
    candidate_drift_observations: float = 0.0
    queries: dict[str, str] = field(default_factory=dict)


@dataclass
class Check:
    """One comparison, with the numbers that decided it."""

    name: str
    status: CheckStatus
    candidate: float | None
    stable: float | None
    threshold: str
    samples: float
    min_samples: int
    reason: str


@dataclass
class Verdict:
    """What the analysis decided, and why."""

    decision: Decision
    reason: str
    checks: list[Check]

    def as_dict(self) -> dict:
        return asdict(self)


def _value(samples, model: str, version: int | None) -> float | None:
    if version is None:
        return None
    for sample in samples:
        if sample.labels.get("model") == model and sample.labels.get("version") == str(version):
            return None if math.isnan(sample.value) else sample.value
    return None


def _max_value(samples, model: str, version: int | None) -> float | None:
    values = [
        s.value
        for s in samples
        if s.labels.get("model") == model
        and s.labels.get("version") == str(version)
        and not math.isnan(s.value)
    ]
    return max(values) if values else None


def collect_evidence(
    prometheus: Prometheus,
    rules: RecordingRules,
    policy: Policy,
    stage: Stage,
    candidate: int,
    stable: int | None,
) -> Evidence:
    """Query Prometheus for one analysis of `candidate` against `stable`."""
    stage_policy = policy.shadow if stage == "shadow" else policy.canary
    window, seconds = stage_policy.window, stage_policy.window_seconds
    evidence = Evidence(window=window, window_seconds=seconds)
    model = policy.model
    results: dict[str, list] = {}

    def ask(record: str) -> list:
        if record not in results:
            expression = rules.windowed(record, window)
            evidence.queries[record] = expression
            results[record] = prometheus.query(expression)
        return results[record]

    served = SERVED_RECORDS
    candidate_rules = SHADOW_RECORDS if stage == "shadow" else SERVED_RECORDS
    rate = _value(ask(candidate_rules["requests"]), model, candidate)
    evidence.candidate_requests = (rate or 0.0) * seconds
    evidence.candidate_error_ratio = _value(ask(candidate_rules["errors"]), model, candidate)
    evidence.stable_error_ratio = _value(ask(served["errors"]), model, stable)
    evidence.candidate_p99_seconds = _value(ask(candidate_rules["p99"]), model, candidate)
    evidence.stable_p99_seconds = _value(ask(served["p99"]), model, stable)
    evidence.candidate_accuracy = _value(ask(candidate_rules["accuracy"]), model, candidate)
    evidence.stable_accuracy = _value(ask(served["accuracy"]), model, stable)
    rate = _value(ask(candidate_rules["feedback"]), model, candidate)
    evidence.candidate_feedback = (rate or 0.0) * seconds
    evidence.stable_feedback = (_value(ask(served["feedback"]), model, stable) or 0.0) * seconds
    if stage == "shadow":
        evidence.agreement = _value(ask(AGREEMENT_RECORD), model, candidate)
    elif policy.checks.drift.enabled:
        evidence.candidate_psi = _max_value(ask(PSI_RECORD), model, candidate)
        evidence.stable_psi = _max_value(ask(PSI_RECORD), model, stable)
        rate = _value(ask(DRIFT_OBSERVATIONS_RECORD), model, candidate)
        evidence.candidate_drift_observations = (rate or 0.0) * seconds
    return evidence


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def judge(evidence: Evidence, policy: Policy, stage: Stage, seconds_in_stage: float) -> Verdict:
    """Decide from `evidence`: rollback on any failed check, wait on any waiting one,
    advance once the stage has lasted a whole window."""
    checks_policy = policy.checks
    stage_policy = policy.shadow if stage == "shadow" else policy.canary
    min_requests = stage_policy.min_requests
    requests = evidence.candidate_requests
    enough_requests = requests >= min_requests
    checks: list[Check] = []

    # Error ratio: the candidate may fail at most max_error_ratio_increase more often.
    limit = (evidence.stable_error_ratio or 0.0) + checks_policy.max_error_ratio_increase
    error_ratio = evidence.candidate_error_ratio
    checks.append(
        Check(
            "error_ratio",
            "wait"
            if not enough_requests or error_ratio is None
            else ("pass" if error_ratio <= limit else "fail"),
            error_ratio,
            evidence.stable_error_ratio,
            f"<= stable + {checks_policy.max_error_ratio_increase} = {limit:.4g}",
            requests,
            min_requests,
            f"{_fmt(error_ratio)} of {requests:.0f} calls failed",
        )
    )

    # p99 latency: within a ratio of stable's, plus an absolute slack.
    candidate_p99, stable_p99 = evidence.candidate_p99_seconds, evidence.stable_p99_seconds
    slack = checks_policy.p99_latency_slack_seconds
    ratio = checks_policy.max_p99_latency_ratio
    if not enough_requests or candidate_p99 is None:
        status, reason = "wait", "too few calls for a p99"
    elif stable_p99 is None:
        status, reason = "skip", "stable has no latency in the window to compare with"
    else:
        bound = stable_p99 * ratio + slack
        status = "pass" if candidate_p99 <= bound else "fail"
        reason = f"p99 {candidate_p99 * 1000:.1f} ms against a bound of {bound * 1000:.1f} ms"
    checks.append(
        Check(
            "p99_latency",
            status,
            candidate_p99,
            stable_p99,
            f"<= stable x {ratio} + {checks_policy.p99_latency_slack}",
            requests,
            min_requests,
            reason,
        )
    )

    # Online accuracy, once both sides have their labels.
    accuracy_policy = checks_policy.accuracy
    labels = min(evidence.candidate_feedback, evidence.stable_feedback)
    candidate_accuracy, stable_accuracy = evidence.candidate_accuracy, evidence.stable_accuracy
    if labels < accuracy_policy.min_feedback or None in (candidate_accuracy, stable_accuracy):
        status = "wait" if accuracy_policy.required else "skip"
        reason = (
            f"{evidence.candidate_feedback:.0f} labels on the candidate, "
            f"{evidence.stable_feedback:.0f} on stable; {accuracy_policy.min_feedback} needed"
        )
    else:
        bound = stable_accuracy - accuracy_policy.max_drop
        status = "pass" if candidate_accuracy >= bound else "fail"
        reason = f"{candidate_accuracy:.3f} against stable's {stable_accuracy:.3f}"
    accuracy_decided = status in ("pass", "fail")
    checks.append(
        Check(
            "online_accuracy",
            status,
            candidate_accuracy,
            stable_accuracy,
            f">= stable - {accuracy_policy.max_drop}",
            labels,
            accuracy_policy.min_feedback,
            reason,
        )
    )

    if stage == "shadow":
        agreement = evidence.agreement
        minimum = policy.shadow.min_agreement
        if accuracy_decided:
            status, reason = "skip", "accuracy had enough labels and decided instead"
        elif accuracy_policy.required:
            status, reason = "skip", "accuracy is required and decides; waiting for labels"
        elif not enough_requests or agreement is None:
            status, reason = "wait", "too few shadow answers"
        else:
            status = "pass" if agreement >= minimum else "fail"
            reason = f"agreed with stable on {agreement:.1%} of answers"
        checks.append(
            Check(
                "shadow_agreement",
                status,
                agreement,
                None,
                f">= {minimum}",
                requests,
                min_requests,
                reason,
            )
        )
    elif checks_policy.drift.enabled:
        drift = checks_policy.drift
        observations = evidence.candidate_drift_observations
        candidate_psi, stable_psi = evidence.candidate_psi, evidence.stable_psi
        if observations < drift.min_observations or candidate_psi is None:
            status, reason = "skip", f"{observations:.0f} drift observations"
        else:
            bound = max(
                drift.max_psi, (stable_psi or 0.0) * drift.max_psi_ratio + drift.max_psi_increase
            )
            status = "pass" if candidate_psi <= bound else "fail"
            reason = f"largest PSI {candidate_psi:.3f} against a bound of {bound:.3f}"
        checks.append(
            Check(
                "drift_psi",
                status,
                candidate_psi,
                stable_psi,
                f"<= max({drift.max_psi}, stable + {drift.max_psi_increase})",
                observations,
                drift.min_observations,
                reason,
            )
        )

    failed = [check.name for check in checks if check.status == "fail"]
    waiting = [check.name for check in checks if check.status == "wait"]
    if failed:
        return Verdict("rollback", f"failed: {', '.join(failed)}", checks)
    if waiting:
        return Verdict("wait", f"not enough data yet: {', '.join(waiting)}", checks)
    if seconds_in_stage < stage_policy.window_seconds:
        remaining = stage_policy.window_seconds - seconds_in_stage
        return Verdict("wait", f"checks pass; the window ends in {remaining:.0f}s", checks)
    return Verdict("advance", "every check passed over a whole window", checks)
