"""Service-level objectives checked at the end of a load run.

The thresholds come from `SLO_P95_MS`, `SLO_P99_MS` and `SLO_MAX_FAILURE_RATIO` (or the
matching `--slo-*` options). They apply to Locust's "Aggregated" row, the same numbers the
CSV and HTML reports show, so a reader can check a verdict against the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Defaults that fit the local stack (embedded model server, MLP model, 2 shared CPU cores,
# Locust on the same machine); tighten them for a dedicated cluster.
DEFAULT_P95_MS = 300.0
DEFAULT_P99_MS = 600.0
DEFAULT_MAX_FAILURE_RATIO = 0.01


@dataclass(frozen=True)
class SloThresholds:
    """Upper bounds: p95 and p99 latency in milliseconds, and the failed share of requests."""

    p95_ms: float = DEFAULT_P95_MS
    p99_ms: float = DEFAULT_P99_MS
    max_failure_ratio: float = DEFAULT_MAX_FAILURE_RATIO

    def __post_init__(self) -> None:
        if self.p95_ms <= 0 or self.p99_ms <= 0:
            raise ValueError(
                f"latency SLOs must be positive milliseconds, got p95={self.p95_ms} "
                f"p99={self.p99_ms}"
            )
        if not 0 <= self.max_failure_ratio <= 1:
            raise ValueError(
                f"SLO_MAX_FAILURE_RATIO must be between 0 and 1, got {self.max_failure_ratio}"
            )


@dataclass(frozen=True)
class RunSummary:
    """What the run measured over every request (Locust's Aggregated row)."""

    requests: int
    failures: int
    p95_ms: float
    p99_ms: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class SloVerdict:
    """The outcome of checking a run against its SLOs; `breaches` name each one missed."""

    thresholds: SloThresholds
    summary: RunSummary
    breaches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.breaches

    def message(self) -> str:
        """One line per breach, or one line saying every SLO was met, with measured values."""
        if self.breaches:
            return "\n".join(f"SLO breached: {breach}" for breach in self.breaches)
        s, t = self.summary, self.thresholds
        return (
            f"SLO met: p95 {s.p95_ms:.1f} ms <= {t.p95_ms:g} ms, "
            f"p99 {s.p99_ms:.1f} ms <= {t.p99_ms:g} ms, "
            f"failure ratio {s.failure_ratio:.4f} <= {t.max_failure_ratio:g} "
            f"({s.requests} requests)"
        )

    def write_json(self, path: Path) -> None:
        """Save the verdict next to the CSV stats, for CI to archive or parse."""
        document = {
            "passed": self.passed,
            "breaches": list(self.breaches),
            "thresholds": asdict(self.thresholds),
            "measured": {**asdict(self.summary), "failure_ratio": self.summary.failure_ratio},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")


def evaluate(summary: RunSummary, thresholds: SloThresholds) -> SloVerdict:
    """Compare a run with its SLOs. A run that made no requests breaches: it proved nothing."""
    breaches: list[str] = []
    if summary.requests == 0:
        breaches.append("no requests were made, so no SLO can be checked")
    else:
        if summary.p95_ms > thresholds.p95_ms:
            breaches.append(f"p95 {summary.p95_ms:.1f} ms > {thresholds.p95_ms:g} ms")
        if summary.p99_ms > thresholds.p99_ms:
            breaches.append(f"p99 {summary.p99_ms:.1f} ms > {thresholds.p99_ms:g} ms")
        if summary.failure_ratio > thresholds.max_failure_ratio:
            breaches.append(
                f"failure ratio {summary.failure_ratio:.4f} > {thresholds.max_failure_ratio:g} "
                f"({summary.failures} of {summary.requests} requests failed)"
            )
    return SloVerdict(thresholds=thresholds, summary=summary, breaches=tuple(breaches))
