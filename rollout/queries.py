"""PromQL for the analysis: the project's own recording rules, re-windowed.

The recording rules (monitoring/rules/*.yml) define what "online accuracy" or "p99
latency per version" means; the dashboard and the alerts read them. The controller asks
the same questions over its policy's window instead of the rules' fixed 5m/30m, so it
takes each rule's expression, inlines the recorded series it reads (the PSI rule reads
two), and replaces every range with the window. One definition, any window: tests run a
rollout over 20 s windows with production's exact arithmetic.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from rollout.errors import EvidenceUnavailableError

RANGE = re.compile(r"\[\d+[smhdwy]\]")
# A recorded name is level:metric:operations; a raw metric has no colon.
RECORDED_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+")


class RecordingRules:
    """The expressions of the recording rules under `rules_dir`, by recorded name."""

    def __init__(self, rules_dir: Path, required: tuple[str, ...] = ()) -> None:
        """Read every `*.yml` rule file; EvidenceUnavailableError names any of `required`
        that none records."""
        self.expressions: dict[str, str] = {}
        for path in sorted(rules_dir.glob("*.yml")):
            document = yaml.safe_load(path.read_text()) or {}
            for group in document.get("groups", []):
                for rule in group.get("rules", []):
                    if "record" in rule:
                        self.expressions[rule["record"]] = rule["expr"].strip()
        missing = [name for name in required if name not in self.expressions]
        if not self.expressions or missing:
            raise EvidenceUnavailableError(
                f"{rules_dir}: the recording rules the analysis reads are missing: "
                f"{', '.join(missing) or 'all'} (ROLLOUT_RULES_DIR must be monitoring/rules)"
            )

    def windowed(self, record: str, window: str, _outer: frozenset[str] = frozenset()) -> str:
        """The expression behind `record`, every range replaced by `window`, the recorded
        series it reads inlined (recursively) so that they take the window too. A rule
        that reads its own past (`last_over_time(itself[1h])`) keeps that reference."""
        if record not in self.expressions:
            raise KeyError(f"no recording rule records {record!r}")
        outer = _outer | {record}

        def inline(match: re.Match[str]) -> str:
            name = match.group(0)
            if name not in self.expressions or name in outer:
                return name
            return f"({self.windowed(name, window, outer)})"

        expression = RECORDED_NAME.sub(inline, self.expressions[record])
        return RANGE.sub(f"[{window}]", expression)


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value."""

    labels: dict[str, str]
    value: float


class Prometheus:
    """Instant queries against Prometheus's HTTP API (`/api/v1/query`)."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout_seconds

    def query(self, expression: str) -> list[Sample]:
        """Evaluate `expression` now. EvidenceUnavailableError when Prometheus does not
        answer or refuses the query: the caller waits rather than decide without it."""
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read(500).decode(errors="replace")
            message = f"Prometheus refused a query ({error.code}): {detail}"
            raise EvidenceUnavailableError(message) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            message = f"Prometheus at {self.base_url} did not answer: {error}"
            raise EvidenceUnavailableError(message) from None
        if body.get("status") != "success":
            raise EvidenceUnavailableError(f"Prometheus query failed: {body.get('error')}")
        samples = []
        for item in body["data"].get("result", []):
            value = float(item["value"][1])
            samples.append(Sample(item.get("metric", {}), value))
        return samples
