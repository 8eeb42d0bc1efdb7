"""The quality gate (TFX calls passing it a "blessing"): refuse to export weak models."""

from __future__ import annotations

import logging
from typing import Any

from trainer.errors import QualityGateError
from trainer.repository import VersionInfo

log = logging.getLogger(__name__)


def check_quality_gate(
    accuracy: float,
    min_accuracy: float,
    max_regression: float,
    baseline: VersionInfo | None,
    upload: dict[str, Any] | None = None,
) -> None:
    """Raise QualityGateError if `accuracy` is below `min_accuracy`, or more than
    `max_regression` below the latest exported version's recorded accuracy, or if the
    upload-like accuracy (`upload["accuracy"]`, trainer.upload_eval) is more than
    `max_regression` below the latest version's on the same evaluation set."""
    if accuracy < min_accuracy:
        raise QualityGateError(
            "min-accuracy",
            f"quality gate refused export: test accuracy {accuracy:.4f} is below "
            f"--min-accuracy {min_accuracy:.4f} by {min_accuracy - accuracy:.4f}",
        )
    if baseline is None:
        return
    if baseline.accuracy is not None:
        drop = baseline.accuracy - accuracy
        if drop > max_regression:
            raise QualityGateError(
                "max-regression",
                f"quality gate refused export: test accuracy {accuracy:.4f} is {drop:.4f} "
                f"below version {baseline.version}'s {baseline.accuracy:.4f}, more than "
                f"--max-regression {max_regression:.4f} allows (by {drop - max_regression:.4f})",
            )
    check_upload_regression(upload, max_regression, baseline)


def check_upload_regression(
    upload: dict[str, Any] | None, max_regression: float, baseline: VersionInfo
) -> None:
    """The upload-like half of the gate; versions scored on another set are not compared."""
    parent = baseline.metadata.get("metrics", {}).get("upload")
    if not upload or not parent or "accuracy" not in parent:
        return
    if parent.get("eval_set") != upload.get("eval_set"):
        log.warning(
            "version %d was scored on upload set %s, this model on %s: not compared",
            baseline.version,
            parent.get("eval_set"),
            upload.get("eval_set"),
        )
        return
    drop = float(parent["accuracy"]) - float(upload["accuracy"])
    if drop > max_regression:
        raise QualityGateError(
            "max-upload-regression",
            f"quality gate refused export: upload-like accuracy {upload['accuracy']:.4f} "
            f"(printed {upload['printed_accuracy']:.4f}, handwriting "
            f"{upload['handwriting_accuracy']:.4f}) is {drop:.4f} below version "
            f"{baseline.version}'s {float(parent['accuracy']):.4f}, more than "
            f"--max-regression {max_regression:.4f} allows (by {drop - max_regression:.4f})",
        )
