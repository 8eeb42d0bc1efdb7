"""Online accuracy per version, as Prometheus' recording rule computes it.

The gateway does not compute accuracy itself: each replica only counts its feedback
(`gateway_feedback_total`), and Prometheus adds up the replicas in the recording rule
`model_version:gateway_online_accuracy:ratio_rate5m` (monitoring/rules/recording.yml).
`OnlineAccuracy` reads that rule's latest values for GET /v1/models/{model}/accuracy,
which the web page's status strip shows. Without Prometheus the route still answers 200,
saying why there is no figure: the page polls it, and a 5xx per poll would feed the
gateway's own error-ratio alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("gateway")

ACCURACY_RULE = "model_version:gateway_online_accuracy:ratio_rate5m"
FEEDBACK_RULE = "model_version:gateway_feedback:rate5m"
WINDOW_SECONDS = 300
# Pages poll; many pages on many replicas must not turn into as many Prometheus queries.
CACHE_SECONDS = 5.0
# A Prometheus answer is a few series per version; anything bigger is not one.
MAX_RESPONSE_BYTES = 1024 * 1024


class PrometheusQueryError(Exception):
    """Prometheus could not be asked, or answered something other than a vector."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal of `value`."""
    return json.dumps(value)


def rule_query(model: str) -> str:
    """Both rules' series for `model`, in one instant query."""
    names = f"{ACCURACY_RULE}|{FEEDBACK_RULE}"
    return f"{{__name__=~{promql_string(names)}, model={promql_string(model)}}}"


def query_prometheus(base_url: str, query: str, timeout: float) -> list[dict[str, Any]]:
    """GET /api/v1/query; the vector's samples, or PrometheusQueryError."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read(MAX_RESPONSE_BYTES))
    except urllib.error.HTTPError as error:
        raise PrometheusQueryError("error", f"Prometheus answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        logger.warning("Prometheus at %s does not answer: %s", base_url, error)
        raise PrometheusQueryError("unreachable", "Prometheus does not answer") from None
    except ValueError:
        raise PrometheusQueryError("error", "Prometheus answered something not JSON") from None
    data = body.get("data") if isinstance(body, dict) else None
    if body.get("status") != "success" or not isinstance(data, dict):
        logger.warning("Prometheus query %r failed: %s", query, body)
        raise PrometheusQueryError("error", "Prometheus could not run the query")
    if data.get("resultType") != "vector":
        raise PrometheusQueryError("error", "Prometheus answered something other than a vector")
    return data.get("result", [])


def versions_from_samples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{version, accuracy, feedback_per_second}] by version, from both rules' samples.

    A version with feedback earlier but none in the window reads 0/0 = NaN in Prometheus:
    its accuracy is null, not a number nobody measured.
    """
    by_version: dict[int, dict[str, Any]] = {}
    for sample in samples:
        metric = sample.get("metric", {})
        version = metric.get("version", "")
        if not (version.isascii() and version.isdigit()):
            continue  # "unknown": feedback whose version was not a served one
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        row = by_version.setdefault(
            int(version), {"version": int(version), "accuracy": None, "feedback_per_second": 0.0}
        )
        finite = math.isfinite(value)
        if metric.get("__name__") == ACCURACY_RULE:
            row["accuracy"] = min(max(value, 0.0), 1.0) if finite else None
        elif metric.get("__name__") == FEEDBACK_RULE:
            row["feedback_per_second"] = value if finite and value > 0 else 0.0
    return [by_version[version] for version in sorted(by_version)]


class OnlineAccuracy:
    """Reads the online-accuracy rule for one model at a time, cached CACHE_SECONDS."""

    def __init__(
        self,
        prometheus_url: str | None,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prometheus_url = prometheus_url
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def read(self, model: str) -> dict[str, Any]:
        """{model, status, message, window_seconds, versions}; never raises."""
        cached = self._cache.get(model)
        if cached is not None and self.clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        answer = await self._read(model)
        self._cache[model] = (self.clock(), answer)
        return answer

    async def _read(self, model: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"model": model, "window_seconds": WINDOW_SECONDS, "versions": []}
        if not self.prometheus_url:
            return {
                **answer,
                "status": "not_configured",
                "message": "online accuracy needs Prometheus: set GATEWAY_PROMETHEUS_URL",
            }
        try:
            samples = await asyncio.to_thread(
                query_prometheus, self.prometheus_url, rule_query(model), self.timeout_seconds
            )
        except PrometheusQueryError as error:
            return {**answer, "status": error.status, "message": error.message}
        versions = versions_from_samples(samples)
        message = "" if versions else "no feedback in the last 5 minutes"
        return {**answer, "status": "ok", "message": message, "versions": versions}
