"""The quality gate (TFX calls passing it a "blessing"): refuse to export weak models."""

from __future__ import annotations

from trainer.errors import QualityGateError
from trainer.repository import VersionInfo


def check_quality_gate(
    accuracy: float,
    min_accuracy: float,
    max_regression: float,
    baseline: VersionInfo | None,
) -> None:
    """Raise QualityGateError if `accuracy` is below `min_accuracy`, or more than
    `max_regression` below the latest exported version's recorded accuracy."""
    if accuracy < min_accuracy:
        raise QualityGateError(
            "min-accuracy",
            f"quality gate refused export: test accuracy {accuracy:.4f} is below "
            f"--min-accuracy {min_accuracy:.4f} by {min_accuracy - accuracy:.4f}",
        )
    if baseline is None or baseline.accuracy is None:
        return
    drop = baseline.accuracy - accuracy
    if drop > max_regression:
        raise QualityGateError(
            "max-regression",
            f"quality gate refused export: test accuracy {accuracy:.4f} is {drop:.4f} below "
            f"version {baseline.version}'s {baseline.accuracy:.4f}, more than "
            f"--max-regression {max_regression:.4f} allows (by {drop - max_regression:.4f})",
        )
