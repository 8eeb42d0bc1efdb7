"""The gateway's work, with no HTTP in it: predict, score feedback, report models.

The FastAPI app (gateway/app.py) is a thin adapter over `DataPlane`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.config import Settings
from gateway.errors import ModelNotFoundError
from gateway.inputs import build_batch, instances_kind, read_instances
from gateway.metrics import GatewayMetrics
from gateway.prediction_ids import PredictionIdSigner
from gateway.preprocessing import prepare_image
from gateway.routing import VersionRouter
from gateway.upstream import ServingClient, VersionSelector

# Images bigger than this are preprocessed in a worker thread so the event loop keeps
# serving other requests; small ones (a canvas PNG) are cheaper to do inline.
INLINE_IMAGE_BYTES = 64 * 1024


class DataPlane:
    """Preprocess -> Predict over gRPC -> postprocess, plus feedback and model status."""

    def __init__(
        self,
        settings: Settings,
        client: ServingClient,
        metrics: GatewayMetrics,
        router: VersionRouter | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.signer = PredictionIdSigner(settings.feedback_secret)
        self.router = router or VersionRouter(
            settings.canary_percent, settings.canary_label, settings.effective_default_label
        )

    async def _timed_preprocess(self, kind: str, work: Callable[[], np.ndarray], inline: bool):
        started = time.perf_counter()
        batch = work() if inline else await asyncio.to_thread(work)
        self.metrics.preprocess_duration.labels(kind).observe(time.perf_counter() - started)
        return batch

    async def predict_instances(
        self, model: str, payload: dict[str, Any], version: int | None, label: str | None
    ) -> dict[str, Any]:
        """Predict on a parsed JSON body {"instances": [...], "value_range": ...}."""
        instances, scale = read_instances(payload, self.settings.max_batch_size)
        kind = instances_kind(instances)
        batch = await self._timed_preprocess(
            kind,
            lambda: build_batch(instances, scale, self.settings.max_image_pixels),
            inline=kind == "array",
        )
        return await self._predict(model, batch, version, label)

    async def predict_image(
        self, model: str, data: bytes, version: int | None, label: str | None
    ) -> dict[str, Any]:
        """Predict on one uploaded image file."""
        batch = await self._timed_preprocess(
            "image",
            lambda: prepare_image(data, self.settings.max_image_pixels)[np.newaxis],
            inline=len(data) <= INLINE_IMAGE_BYTES,
        )
        return await self._predict(model, batch, version, label)

    async def _predict(self, model, batch, version, label) -> dict[str, Any]:
        selector, by_canary = self.router.select(version, label)
        try:
            result = await self.client.predict(model, selector, batch)
        except ModelNotFoundError:
            if not by_canary:
                raise
            # No canary deployed (yet): the split must not fail users, so serve stable.
            selector = VersionSelector(label=self.router.default_label or None)
            result = await self.client.predict(model, selector, batch)
        if selector.label:
            self.metrics.observe_version_label(model, selector.label, result.version)
        return self._postprocess(model, result.version, result.probabilities)

    def _postprocess(self, model: str, version: int, probabilities: np.ndarray):
        classes = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(classes)), classes]
        version_label = str(version)
        predictions = []
        for row, predicted, confidence in zip(
            probabilities.tolist(), classes.tolist(), confidences.tolist(), strict=True
        ):
            self.metrics.predictions.labels(model, version_label, str(predicted)).inc()
            self.metrics.confidence.labels(model, version_label).observe(confidence)
            predictions.append(
                {
                    "class": predicted,
                    "confidence": confidence,
                    "probabilities": row,
                    "prediction_id": self.signer.issue(model, version, predicted),
                }
            )
        return {"model": model, "version": version, "predictions": predictions}

    def score_feedback(self, items: list[tuple[str, int]]) -> list[dict[str, str]]:
        """Verify every id first (all-or-nothing), then count each outcome."""
        claims = [self.signer.verify(prediction_id) for prediction_id, _ in items]
        results = []
        for (prediction_id, label), claim in zip(items, claims, strict=True):
            outcome = "correct" if claim.predicted_class == label else "incorrect"
            self.metrics.feedback.labels(claim.model, str(claim.version), outcome).inc()
            results.append({"prediction_id": prediction_id, "outcome": outcome})
        return results

    async def describe_model(self, model: str) -> dict[str, Any]:
        """Versions and states (GetModelStatus), signatures (GetModelMetadata)."""
        versions = await self.client.model_status(model)
        described: dict[str, Any] = {
            "name": model,
            "versions": [row.__dict__ for row in sorted(versions, key=lambda r: r.version)],
            "signature_version": None,
            "signatures": {},
        }
        if any(row.state == "AVAILABLE" for row in versions):
            try:
                version, signatures = await self.client.model_signatures(model)
            except ModelNotFoundError:  # unloaded between the two calls
                return described
            described["signature_version"] = version
            described["signatures"] = signatures
        return described

    async def readiness(self) -> dict[str, Any]:
        """Ready when the default model has an AVAILABLE version; never raises."""
        model = self.settings.default_model
        try:
            versions = await self.client.model_status(model)
        except Exception as error:  # any upstream failure means "not ready", with the reason
            return {"ready": False, "model": model, "reason": str(error)}
        available = sorted(row.version for row in versions if row.state == "AVAILABLE")
        return {
            "ready": bool(available),
            "model": model,
            "available_versions": available,
            "reason": "" if available else f"model {model!r} has no AVAILABLE version",
        }
