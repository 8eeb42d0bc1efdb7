"""An in-process stand-in for the model server, for fast route and validation tests.

`FakeUpstream` answers like the real client (gateway/upstream.py) without gRPC: each
instance's class is its ink's total mod 10, so tests can predict the answer. The
end-to-end suites (test_api.py, tests/e2e) use the real model server.
"""

from __future__ import annotations

import numpy as np

from gateway.errors import ModelNotFoundError
from gateway.upstream import PredictResult, VersionSelector, VersionStatus

SIGNATURES = {
    "serving_default": {
        "method_name": "tensorflow/serving/predict",
        "inputs": {"images": {"dtype": "DT_FLOAT", "shape": [-1, 28, 28]}},
        "outputs": {"probabilities": {"dtype": "DT_FLOAT", "shape": [-1, 10]}},
    }
}


def expected_class(batch: np.ndarray) -> np.ndarray:
    """The class FakeUpstream answers for each instance of a [N, 28, 28] batch."""
    return np.rint(batch.reshape(len(batch), -1).sum(axis=1)).astype(int) % 10


class FakeUpstream:
    """Serves versions of one model; `error` makes every call raise it."""

    def __init__(self, versions: tuple[int, ...] = (1,), labels: dict[str, int] | None = None):
        self.versions = versions
        self.labels = labels or {}
        self.error: Exception | None = None
        self.batches: list[np.ndarray] = []
        self.shadow_batches: list[np.ndarray] = []
        # (selector, shadow) of every Predict, so tests see which version routing asked for.
        self.predict_calls: list[tuple[VersionSelector | None, bool]] = []
        # Outputs of the reference_stats signature; None: the model has no such signature.
        self.reference: dict[str, np.ndarray] | None = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _version(self, selector: VersionSelector | None) -> int:
        if self.error is not None:
            raise self.error
        if selector is None or (selector.version is None and not selector.label):
            return max(self.versions)
        version = selector.version or self.labels.get(selector.label or "")
        if version not in self.versions:
            raise ModelNotFoundError(f"no {selector.describe()}")
        return version

    async def predict(self, model, selector, batch, timeout, shadow=False) -> PredictResult:
        self.predict_calls.append((selector, shadow))
        version = self._version(selector)
        if shadow:
            self.shadow_batches.append(batch)
        else:
            self.batches.append(batch)
        probabilities = np.full((len(batch), 10), 0.01, dtype=np.float32)
        probabilities[np.arange(len(batch)), expected_class(batch)] = 0.91
        return PredictResult(version=version, probabilities=probabilities)

    async def model_status(self, model, selector=None) -> list[VersionStatus]:
        self._version(selector)
        return [VersionStatus(version, "AVAILABLE", 0, "") for version in self.versions]

    async def model_signatures(self, model, selector=None):
        return self._version(selector), SIGNATURES

    async def reference_stats(self, model, version, signature_name) -> dict[str, np.ndarray]:
        self._version(VersionSelector(version=version))
        if self.reference is None:
            raise ModelNotFoundError(f"no signature {signature_name!r}")
        return self.reference
