"""Schemathesis fuzzing of the gateway's own OpenAPI schema (at least 1,000 requests).

Every operation gets property-based requests (valid and invalid bodies, paths, queries,
content types). Checks: no 5xx other than the documented 503/504, and every response,
error or not, matches the schema's declared response for its status.

Driven through schemathesis's Python API (one hypothesis run per operation) rather than
its pytest plugin, so the request count and statuses can be tallied for the report.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance

from tests.reliability.stack import write_report

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# Per operation and generation mode (valid, then invalid data): 5 operations with inputs
# x 2 modes x 102, plus the 2 without inputs, is over 1,000 requests in all.
EXAMPLES_PER_OPERATION = 102
MIN_REQUESTS = 1000
DOCUMENTED_5XX = {503, 504}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def fuzz_gateway(base_url: str, examples: int = EXAMPLES_PER_OPERATION) -> dict[str, Any]:
    """Fuzz every operation of the gateway's schema; return counts and distinct failures."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    tally: dict[str, Any] = {"by_operation": {}, "statuses": {}, "failure_kinds": {}}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, MODES):
        run_operation(operation, mode, examples, tally)
    return {"requests": sum(tally["by_operation"].values()), **tally}


def run_operation(operation, mode, examples: int, tally: dict[str, Any]) -> None:
    """One hypothesis run of `examples` generated requests against one operation."""
    label = operation.label
    sent, statuses, failures = tally["by_operation"], tally["statuses"], tally["failure_kinds"]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same requests on every run: a failure reproduces
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call(timeout=10)
        sent[label] = sent.get(label, 0) + 1
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        # Recorded rather than raised, so one bug does not hide the others and the
        # request count stays what the report says.
        if response.status_code >= 500 and response.status_code not in DOCUMENTED_5XX:
            record(failures, label, f"HTTP {response.status_code}", case, response)
        try:
            case.validate_response(response, checks=(response_schema_conformance,))
        except Exception as error:  # schemathesis raises its check failures
            record(failures, label, f"schema: {error}", case, response)

    try:
        check()
    except Unsatisfiable:
        # An operation with no inputs (GET /healthz) has no invalid form to generate.
        if mode is not GenerationMode.NEGATIVE:
            raise


def record(failures: dict[str, dict[str, Any]], label: str, what: str, case, response) -> None:
    """Keep the first request of each distinct failure, with what reproduces it."""
    signature = f"{label}: {what.splitlines()[0][:200]}"
    failures.setdefault(
        signature,
        {
            "count": 0,
            "request": {
                "method": case.method,
                "path": case.formatted_path,
                "query": case.query,
                "headers": dict(case.headers or {}),
                "media_type": case.media_type,
                "body": repr(case.body)[:300],
            },
            "response": response.text[:300],
        },
    )
    failures[signature]["count"] += 1


def test_fuzzed_requests_get_no_undocumented_5xx_and_match_the_schema(shared_gateway) -> None:
    stats = fuzz_gateway(shared_gateway.url)
    failed = sum(item["count"] for item in stats["failure_kinds"].values())
    write_report("fuzzing", {**stats, "failures": failed, "unexpected": failed})
    assert stats["requests"] >= MIN_REQUESTS, stats["by_operation"]
    assert len(stats["by_operation"]) >= 7, "every route of the schema is fuzzed"
    assert not stats["failure_kinds"], json.dumps(stats["failure_kinds"], indent=1)[:4000]
