"""Training results pushed to the Prometheus Pushgateway (a batch job cannot be scraped)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOB_NAME = "trainer"
UPLOAD_ACCURACY = "trainer_eval_upload_accuracy"
# The parts of the upload-like set (trainer.upload_eval), as the `set` label's values,
# and the keys of their accuracy in the trainer's `metrics.upload` report.
UPLOAD_SETS = {"printed": "printed_accuracy", "handwriting": "handwriting_accuracy"}


def upload_accuracies(upload: Mapping[str, Any] | None) -> dict[str, float]:
    """`set` label -> accuracy, from a version's `metrics.upload` (parts it lacks left out)."""
    upload = upload or {}
    return {name: float(upload[key]) for name, key in UPLOAD_SETS.items() if key in upload}


def push_training_metrics(
    gateway_url: str,
    model_name: str,
    version: int,
    accuracy: float,
    loss: float,
    duration_seconds: float,
    timeout: float = 5.0,
    upload: Mapping[str, Any] | None = None,
) -> bool:
    """Push `trainer_eval_*` and `trainer_train_duration_seconds` for one exported version.

    `upload` is the version's upload-like report (`metrics.upload` in its metadata): its
    printed and handwriting accuracy become `trainer_eval_upload_accuracy{set=...}`, so
    a dashboard shows what MNIST accuracy hides (a model can score 0.97 there and misread
    one upload in six). Without it, or for a part it lacks, that series is not pushed.

    Uses a private CollectorRegistry so nothing else in the process leaks into the push.
    The group is keyed by model and version: each version keeps its own offline figures on
    the Pushgateway, because an older version may still serve (as `stable`) long after a
    newer one is pushed, and online-vs-offline accuracy is compared per version. A failure
    is logged as a warning and reported by the return value: monitoring must never undo an
    export that already succeeded.
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    labels = ("model", "version")
    values = {
        "trainer_eval_accuracy": ("Test-set accuracy of the exported version.", accuracy),
        "trainer_eval_loss": ("Test-set cross-entropy loss of the exported version.", loss),
        "trainer_train_duration_seconds": (
            "Wall time of training the exported version.",
            duration_seconds,
        ),
    }
    for name, (description, value) in values.items():
        Gauge(name, description, labels, registry=registry).labels(model_name, str(version)).set(
            value
        )
    by_set = upload_accuracies(upload)
    if by_set:
        gauge = Gauge(
            UPLOAD_ACCURACY,
            "Accuracy of the exported version on the upload-like set, per part "
            "(printed digits in evaluation-only fonts; independent handwriting).",
            (*labels, "set"),
            registry=registry,
        )
        for name, value in by_set.items():
            gauge.labels(model_name, str(version), name).set(value)
    try:
        push_to_gateway(
            gateway_url,
            job=JOB_NAME,
            registry=registry,
            grouping_key={"model": model_name, "version": str(version)},
            timeout=timeout,
        )
    except Exception as error:  # any failure (DNS, refused, HTTP 4xx/5xx) is only a warning
        log.warning(
            "could not push training metrics to the Pushgateway at %s: %s", gateway_url, error
        )
        return False
    log.info("pushed training metrics for %s/%d to %s", model_name, version, gateway_url)
    return True


def push_recorded_metrics(gateway_url: str, repository: Path, timeout: float = 5.0) -> int:
    """Push the figures recorded in each published version's metadata.json; return the count.

    Versions trained while no Pushgateway was running (the first `make demo`, a laptop
    run) still get their offline accuracy into Prometheus this way, upload-like accuracy
    included where the metadata records it. Versions whose metadata lacks accuracy or loss
    are skipped.
    """
    from trainer.repository import describe_repository

    pushed = 0
    for model_name, versions in describe_repository(repository).items():
        for info in versions:
            metrics = info.metadata.get("metrics", {})
            if "accuracy" not in metrics or "loss" not in metrics:
                continue
            duration = info.metadata.get("training", {}).get("train_seconds", 0.0)
            pushed += push_training_metrics(
                gateway_url,
                model_name,
                info.version,
                float(metrics["accuracy"]),
                float(metrics["loss"]),
                float(duration),
                timeout=timeout,
                upload=metrics.get("upload"),
            )
    return pushed
