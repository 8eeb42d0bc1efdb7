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
from gateway.decode_pool import DecodePool
from gateway.errors import DuplicateFeedbackError, GatewayError, ModelNotFoundError
from gateway.feedback_store import FeedbackStore
from gateway.inputs import PredictInput
from gateway.metrics import GatewayMetrics
from gateway.prediction_ids import PredictionIdSigner
from gateway.preprocessing import prepare_image
from gateway.routing import VersionRouter
from gateway.upstream import Upstream, VersionSelector


class DataPlane:
    """Preprocess -> Predict over gRPC -> postprocess, plus feedback and model status.

    One deadline (GATEWAY_REQUEST_TIMEOUT_SECONDS) covers a prediction from the start of
    preprocessing to the model's answer.
    """

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        metrics: GatewayMetrics,
        feedback_store: FeedbackStore,
        decode_pool: DecodePool,
        router: VersionRouter | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.feedback_store = feedback_store
        self.decode_pool = decode_pool
        self.signer = PredictionIdSigner(
            settings.feedback_secret.get_secret_value(),
            settings.feedback_max_age.total_seconds(),
        )
        self.router = router or VersionRouter(
            settings.canary_percent, settings.canary_label, settings.effective_default_label
        )

    def check_model(self, model: str) -> None:
        """A model the gateway does not serve is a 404, without a call upstream."""
        if model not in self.settings.model_names:
            shown = model if len(model) <= 64 else model[:61] + "..."
            raise ModelNotFoundError(
                f"model {shown!r} is not served here; the models are "
                f"{', '.join(self.settings.model_names)} (GET /v1/models)"
            )

    async def predict_instances(
        self,
        model: str,
        request: PredictInput,
        version: int | None,
        label: str | None,
        return_input: bool = False,
    ) -> dict[str, Any]:
        """Predict on a parsed JSON body; `return_input` adds what the model saw."""
        self.check_model(model)
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        max_pixels = self.settings.max_image_pixels
        batch = await self._preprocess(
            request.kind,
            lambda: request.to_batch(max_pixels, deadline),
            deadline,
            # Arrays are cheap numpy work: a thread hop would cost more than it saves.
            in_thread=request.kind != "array",
        )
        result = await self._predict(model, batch, version, label, deadline)
        return attach_inputs(result, batch) if return_input else result

    async def predict_image(
        self,
        model: str,
        data: bytes,
        version: int | None,
        label: str | None,
        return_input: bool = False,
    ) -> dict[str, Any]:
        """Predict on one uploaded image file; `return_input` adds what the model saw."""
        self.check_model(model)
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        max_pixels = self.settings.max_image_pixels
        batch = await self._preprocess(
            "image", lambda: prepare_image(data, max_pixels)[np.newaxis], deadline, in_thread=True
        )
        result = await self._predict(model, batch, version, label, deadline)
        return attach_inputs(result, batch) if return_input else result

    async def _preprocess(
        self, kind: str, work: Callable[[], np.ndarray], deadline: float, in_thread: bool
    ) -> np.ndarray:
        started = time.perf_counter()
        batch = await self.decode_pool.run(work, deadline) if in_thread else work()
        self.metrics.preprocess_duration.labels(kind).observe(time.perf_counter() - started)
        return batch

    async def _predict(self, model, batch, version, label, deadline) -> dict[str, Any]:
        selector, by_canary = self.router.select(version, label)
        try:
            result = await self.upstream.predict(model, selector, batch, _left(deadline))
        except ModelNotFoundError:
            if not by_canary:
                raise
            # No canary deployed (yet): the split must not fail users, so serve stable.
            selector = VersionSelector(label=self.router.default_label or None)
            result = await self.upstream.predict(model, selector, batch, _left(deadline))
        if selector.label:
            self.metrics.observe_version_label(model, selector.label, result.version)
        return self._postprocess(model, result.version, result.probabilities)

    def _postprocess(self, model: str, version: int, probabilities: np.ndarray):
        classes = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(classes)), classes]
        model_label, version_label = self.metrics.labels.model(model), str(version)
        predictions = []
        for row, predicted, confidence in zip(
            probabilities.tolist(), classes.tolist(), confidences.tolist(), strict=True
        ):
            self.metrics.predictions.labels(model_label, version_label, str(predicted)).inc()
            self.metrics.confidence.labels(model_label, version_label).observe(confidence)
            predictions.append(
                {
                    "class": predicted,
                    "confidence": confidence,
                    "probabilities": row,
                    "prediction_id": self.signer.issue(model, version, predicted),
                }
            )
        return {"model": model, "version": version, "predictions": predictions}

    async def score_feedback(self, items: list[tuple[str, int]]) -> dict[str, Any]:
        """Score each prediction id at most once, across replicas.

        Every id is verified first (all or nothing: one forged or expired id refuses the
        request). Then the store marks them scored in one step; duplicates are reported
        per item and counted apart. Only new ids reach gateway_feedback_total, which feeds
        online accuracy.
        """
        try:
            claims = [self.signer.verify(prediction_id) for prediction_id, _ in items]
        except GatewayError as error:
            self.metrics.feedback_rejected.labels(
                "expired" if error.status_code == 410 else "invalid"
            ).inc(len(items))
            raise
        ttl = int(self.settings.feedback_max_age.total_seconds())
        fresh = await self.feedback_store.mark_scored([claim.key for claim in claims], ttl)
        results = []
        for (prediction_id, label), claim, is_new in zip(items, claims, fresh, strict=True):
            if not is_new:
                results.append({"prediction_id": prediction_id, "outcome": "duplicate"})
                continue
            outcome = "correct" if claim.predicted_class == label else "incorrect"
            self.metrics.feedback.labels(
                self.metrics.labels.model(claim.model), str(claim.version), outcome
            ).inc()
            results.append({"prediction_id": prediction_id, "outcome": outcome})
        duplicates = fresh.count(False)
        if duplicates:
            self.metrics.feedback_rejected.labels("duplicate").inc(duplicates)
        if duplicates == len(items):
            raise DuplicateFeedbackError(
                "this prediction was scored already; each prediction_id counts once"
                if len(items) == 1
                else f"all {len(items)} prediction ids were scored already; each counts once"
            )
        return {"accepted": len(items) - duplicates, "duplicates": duplicates, "results": results}

    async def describe_model(self, model: str) -> dict[str, Any]:
        """Versions and states (GetModelStatus), signatures (GetModelMetadata)."""
        self.check_model(model)
        versions = await self.upstream.model_status(model)
        described: dict[str, Any] = {
            "name": model,
            "versions": [row.__dict__ for row in sorted(versions, key=lambda r: r.version)],
            "signature_version": None,
            "signatures": {},
        }
        if any(row.state == "AVAILABLE" for row in versions):
            try:
                version, signatures = await self.upstream.model_signatures(model)
            except ModelNotFoundError:  # unloaded between the two calls
                return described
            described["signature_version"] = version
            described["signatures"] = signatures
            described["labels"] = await self._resolve_labels(model)
        return described

    async def _resolve_labels(self, model: str) -> dict[str, int]:
        """The version each label the gateway routes to names; unknown labels left out.

        TF Serving has no call that lists labels. GetModelMetadata resolves one (as Predict
        does); GetModelStatus ignores labels and would list every version.
        """
        labels = sorted(self.settings.version_labels)

        async def resolve(label: str) -> int | None:
            try:
                version, _ = await self.upstream.model_signatures(
                    model, VersionSelector(label=label)
                )
            except GatewayError:  # no such label (or the server went away): not listed
                return None
            return version

        versions = await asyncio.gather(*(resolve(label) for label in labels))
        return {
            label: version
            for label, version in zip(labels, versions, strict=True)
            if version is not None
        }

    async def readiness(self) -> dict[str, Any]:
        """Ready when the default model has an AVAILABLE version; never raises.

        The feedback store is reported, not required: predictions work without it.
        """
        model = self.settings.default_model
        store = self.feedback_store.kind
        warnings = []
        if store == "local":
            warnings.append(
                "feedback deduplication is local to this replica: set GATEWAY_REDIS_URL to "
                "share it between replicas"
            )
        elif not await self.feedback_store.reachable():
            warnings.append(
                "the feedback store (Redis) does not answer: POST /v1/feedback answers 503 "
                "until it is back"
            )
        state: dict[str, Any] = {"model": model, "feedback_dedup": store, "warnings": warnings}
        try:
            versions = await self.upstream.model_status(model)
        except GatewayError as error:  # upstream failures mean "not ready", with the reason
            return {**state, "ready": False, "reason": error.message}
        available = sorted(row.version for row in versions if row.state == "AVAILABLE")
        return {
            **state,
            "ready": bool(available),
            "available_versions": available,
            "reason": "" if available else f"model {model!r} has no AVAILABLE version",
        }


def attach_inputs(result: dict[str, Any], batch: np.ndarray) -> dict[str, Any]:
    """Give each prediction the [28, 28] image the model saw, rounded to 4 decimals."""
    images = np.round(batch.astype(np.float64), 4).tolist()
    for prediction, image in zip(result["predictions"], images, strict=True):
        prediction["input"] = image
    return result


def _left(deadline: float) -> float:
    """Seconds until `deadline`, at least a millisecond (gRPC then ends the call)."""
    return max(deadline - time.monotonic(), 0.001)
