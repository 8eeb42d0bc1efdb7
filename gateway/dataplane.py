"""The gateway's work, with no HTTP in it: predict, score feedback, report models.

The FastAPI app (gateway/app.py) is a thin adapter over `DataPlane`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.config import Settings
from gateway.decode_pool import DecodePool
from gateway.drift import DriftMonitor
from gateway.errors import DuplicateFeedbackError, GatewayError, ModelNotFoundError
from gateway.feedback_store import FeedbackStore
from gateway.inputs import PredictInput
from gateway.metrics import GatewayMetrics
from gateway.prediction_ids import PredictionIdSigner
from gateway.prediction_log import PredictionLog
from gateway.prediction_memory import PredictionMemory, Remembered
from gateway.preprocessing import prepare_image
from gateway.routing import RolloutRecords, VersionRouter
from gateway.shadow import ShadowCopy, ShadowRunner
from gateway.upstream import Upstream, VersionSelector

# Probabilities in the log keep 6 decimals: enough to rank and calibrate, half the bytes.
LOG_DECIMALS = 6


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
        rollout: RolloutRecords | None = None,
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
        # `rollout`: the rollout controller's records, which override the canary settings
        # for the models they name (gateway/rollout_record.py).
        self.router = router or VersionRouter(
            settings.canary_percent,
            settings.canary_label,
            settings.effective_default_label,
            rollout=rollout,
        )
        # What the gateway observes besides answering (each part optional): the prediction
        # log, the memory of inputs and shadow answers, shadow traffic, drift counters.
        self.prediction_log: PredictionLog | None = None
        self.memory: PredictionMemory | None = None
        self.shadow: ShadowRunner | None = None
        self.drift: DriftMonitor | None = None
        self._sample = random.Random()

    def attach_observers(
        self,
        prediction_log: PredictionLog | None = None,
        memory: PredictionMemory | None = None,
        shadow: ShadowRunner | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        """Turn on the parts of observation the settings ask for (gateway/app.py)."""
        self.prediction_log, self.memory = prediction_log, memory
        self.shadow, self.drift = shadow, drift

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
        request_id: str = "",
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
        context = (request_id, "predict", request.kind)
        result = await self._predict(model, batch, version, label, deadline, context)
        return attach_inputs(result, batch) if return_input else result

    async def predict_image(
        self,
        model: str,
        data: bytes,
        version: int | None,
        label: str | None,
        request_id: str = "",
        return_input: bool = False,
    ) -> dict[str, Any]:
        """Predict on one uploaded image file; `return_input` adds what the model saw."""
        self.check_model(model)
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        max_pixels = self.settings.max_image_pixels
        batch = await self._preprocess(
            "image", lambda: prepare_image(data, max_pixels)[np.newaxis], deadline, in_thread=True
        )
        context = (request_id, "predict/image", "image")
        result = await self._predict(model, batch, version, label, deadline, context)
        return attach_inputs(result, batch) if return_input else result

    async def _preprocess(
        self, kind: str, work: Callable[[], np.ndarray], deadline: float, in_thread: bool
    ) -> np.ndarray:
        started = time.perf_counter()
        batch = await self.decode_pool.run(work, deadline) if in_thread else work()
        self.metrics.preprocess_duration.labels(kind).observe(time.perf_counter() - started)
        return batch

    async def _predict(self, model, batch, version, label, deadline, context) -> dict[str, Any]:
        selector, by_canary = self.router.select(version, label, model)
        try:
            result = await self.upstream.predict(model, selector, batch, _left(deadline))
        except ModelNotFoundError:
            if not by_canary:
                raise
            # No canary deployed (yet): the split must not fail users, so serve stable.
            selector = self.router.fallback(model)
            result = await self.upstream.predict(model, selector, batch, _left(deadline))
        if selector.label:
            self.metrics.observe_version_label(model, selector.label, result.version)
        answer = self._postprocess(model, result.version, result.probabilities)
        self._observe(answer, batch, result.probabilities, selector, deadline, context)
        return answer

    def _observe(self, answer, batch, probabilities, selector, deadline, context) -> None:
        """Log, remember, count drift and offer a shadow copy; none of it waits."""
        predictions = answer["predictions"]
        model, version = answer["model"], answer["version"]
        classes = probabilities.argmax(axis=1)
        if self.drift is not None:
            self.drift.observe(model, version, batch, classes, probabilities.max(axis=1))
        ids = [p["prediction_id"] for p in predictions]
        keys = [prediction_id.rpartition(".")[2] for prediction_id in ids]
        if self.prediction_log is not None:
            self._log_predictions(
                answer, batch, probabilities, ids, keys, selector, deadline, context
            )
        if self.shadow is not None and self.shadow.may_copy(model):
            self.shadow.offer(ShadowCopy(model, version, batch, classes.tolist(), keys, ids))

    def _log_predictions(
        self, answer, batch, probabilities, ids, keys, selector, deadline, context
    ):
        assert self.prediction_log is not None
        request_id, route, input_kind = context
        now = time.time()
        latency_ms = round(
            (self.settings.request_timeout_seconds - (deadline - time.monotonic())) * 1000, 3
        )
        pixels = np.rint(batch * 255.0).clip(0, 255).astype(np.uint8)
        rounded = np.round(probabilities.astype(np.float64), LOG_DECIMALS).tolist()
        sample = self.settings.log_sample
        for index, prediction in enumerate(answer["predictions"]):
            raw = pixels[index].tobytes()
            record = {
                "type": "prediction",
                "time": now,
                "prediction_id": ids[index],
                "request_id": request_id,
                "model": answer["model"],
                "version": answer["version"],
                "label": selector.label,
                "route": route,
                "input_kind": input_kind,
                "class": prediction["class"],
                "probabilities": rounded[index],
                "latency_ms": latency_ms,
                "input_sha256": hashlib.sha256(raw).hexdigest(),
            }
            if sample >= 1.0 or self._sample.random() < sample:
                record["input"] = base64.b64encode(raw).decode("ascii")
            self.prediction_log.submit(record)
            if self.memory is not None:
                self.memory.remember(keys[index], "input", raw)

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
        remembered = await self._recall(claims, fresh)
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
            self._log_feedback(prediction_id, claim, label, remembered.get(claim.key))
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

    async def _recall(self, claims, fresh) -> dict[str, Remembered]:
        """What the memory holds of the newly scored ids (their inputs, shadow answers)."""
        if self.memory is None:
            return {}
        keys = [claim.key for claim, is_new in zip(claims, fresh, strict=True) if is_new]
        if not keys:
            return {}
        return dict(zip(keys, await self.memory.recall(keys), strict=True))

    def _log_feedback(self, prediction_id, claim, label: int, remembered) -> None:
        """Score the shadow's answer, and log the label with the input, sampled or not."""
        shadow = remembered.shadow if remembered is not None else None
        if shadow is not None:
            outcome = "correct" if shadow["c"] == label else "incorrect"
            self.metrics.shadow_feedback.labels(
                self.metrics.labels.model(claim.model), str(shadow["v"]), outcome
            ).inc()
        if self.prediction_log is None:
            return
        raw = remembered.input if remembered is not None else None
        record: dict[str, Any] = {
            "type": "feedback",
            "time": time.time(),
            "prediction_id": prediction_id,
            "model": claim.model,
            "version": claim.version,
            "class": claim.predicted_class,
            "true_label": label,
            "correct": claim.predicted_class == label,
            "issued_at": claim.issued_at,
            "input_sha256": hashlib.sha256(raw).hexdigest() if raw else None,
            "input": base64.b64encode(raw).decode("ascii") if raw else None,
        }
        if shadow is not None:
            record["shadow"] = {
                "version": shadow["v"],
                "class": shadow["c"],
                "correct": shadow["c"] == label,
            }
        self.prediction_log.submit(record)

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
