"""Rollout policies: one declarative file per model, `rollout/policies/<model>.yaml`.

Thresholds, windows and minimum sample sizes live here, not in code, and are validated at
start-up: a typo is an error naming the file and the field, never a silent default.
Windows are Prometheus durations ("20s", "5m"); the controller's queries use them as their
range, so tests can run a rollout in seconds with the same code.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollout.errors import PolicyError

DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration of one unit ("20s", "5m")."""
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 20s, 5m or 1h")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def _checked_duration(text: str) -> str:
    duration_seconds(text)
    return text


Duration = Annotated[str, AfterValidator(_checked_duration)]


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt threshold must not fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowPolicy(Strict):
    """The shadow stage: the candidate answers a copy of live traffic nobody sees."""

    enabled: bool = True
    percent: float = Field(100.0, gt=0, le=100)
    window: Duration = "5m"
    min_requests: int = Field(200, ge=1)
    # Agreement with the stable version's answers: the stand-in for accuracy while too few
    # labels have arrived (a better model disagrees exactly where stable is wrong, so once
    # labels suffice, accuracy decides instead).
    min_agreement: float = Field(0.9, ge=0, le=1)

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)


class CanaryPolicy(Strict):
    """The canary stage: rising shares of real traffic, each analysed over a window."""

    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0], min_length=1
    )
    window: Duration = "5m"
    min_requests: int = Field(100, ge=1)

    @field_validator("steps")
    @classmethod
    def rising(cls, steps: list[float]) -> list[float]:
        """Each step sends more traffic than the one before."""
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError("canary steps must rise, for example [5, 25, 50]")
        return steps

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)


class AccuracyPolicy(Strict):
    """Online accuracy from feedback, candidate against stable over the same window."""

    min_feedback: int = Field(50, ge=1)
    max_drop: float = Field(0.02, ge=0, le=1)
    # True: never promote without labelled evidence (a stage waits for min_feedback labels
    # on both sides). False: the check counts once the labels are there.
    required: bool = False


class DriftPolicy(Strict):
    """Input and output drift (PSI against each version's training reference)."""

    enabled: bool = True
    min_observations: int = Field(200, ge=1)
    max_psi: float = Field(0.25, gt=0)
    # A drift both versions see is the traffic's, not the candidate's: it fails only when
    # it also exceeds stable's PSI times max_psi_ratio plus max_psi_increase. The ratio
    # matters when the traffic drifted for both (PSI of several units): there the
    # candidate's PSI, on fewer observations and with its own output statistics, differs
    # from stable's by far more than 0.1 without the candidate being at fault.
    max_psi_ratio: float = Field(2.0, ge=1)
    max_psi_increase: float = Field(0.1, ge=0)


class ChecksPolicy(Strict):
    """Candidate-versus-stable thresholds shared by the shadow and canary stages."""

    max_error_ratio_increase: float = Field(0.01, ge=0, le=1)
    max_p99_latency_ratio: float = Field(1.5, ge=1)
    # Below a few milliseconds a ratio is mostly noise: the candidate's p99 may exceed
    # stable's by this much whatever the ratio says.
    p99_latency_slack: Duration = "20ms"
    accuracy: AccuracyPolicy = AccuracyPolicy()
    drift: DriftPolicy = DriftPolicy()

    @property
    def p99_latency_slack_seconds(self) -> float:
        return duration_seconds(self.p99_latency_slack)


class Policy(Strict):
    """How one model's new versions are rolled out."""

    model: str = Field(min_length=1, max_length=64)
    shadow: ShadowPolicy = ShadowPolicy()
    canary: CanaryPolicy = CanaryPolicy()
    checks: ChecksPolicy = ChecksPolicy()


def load_policy(path: Path) -> Policy:
    """Read and validate one policy file; PolicyError names the file and the field."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PolicyError(f"{path}: cannot read the policy: {error}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{path}: a policy is a mapping with at least `model:`")
    try:
        policy = Policy.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(top)'}: {item['msg']}"
            for item in error.errors()
        )
        raise PolicyError(f"{path}: invalid policy: {problems}") from None
    if path.stem != policy.model:
        raise PolicyError(
            f"{path}: the policy of model {policy.model!r} belongs in {policy.model}.yaml"
        )
    return policy


def load_policies(directory: Path) -> dict[str, Policy]:
    """Every `<model>.yaml` in `directory`, by model name; at least one."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise PolicyError(f"{directory}: no policy files (<model>.yaml)")
    return {policy.model: policy for policy in map(load_policy, paths)}
