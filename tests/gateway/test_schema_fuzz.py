"""Schemathesis against the gateway's own /openapi.json: the schema is the validation.

The schemathesis CLI, as a user would run it, against the real gateway over the real
model server: every operation, positive and negative data, with the checks
not_a_server_error and response_schema_conformance, and any warning (among them "Schema
validation mismatch") failing the run (schemathesis/schemathesis.toml). Only the parts
a schema cannot express come from the real thing (schemathesis/hooks.py). The gateway's
own request counter says how many requests the run made.
"""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from tests.fixtures.processes import REPO_ROOT

pytestmark = pytest.mark.slow

SCHEMATHESIS = REPO_ROOT / ".venv" / "bin" / "schemathesis"
CONFIG = REPO_ROOT / "tests" / "gateway" / "schemathesis" / "schemathesis.toml"
MAX_EXAMPLES = 80  # per operation and phase: ~1,300 requests over the 7 operations
MIN_REQUESTS = 1000
# Operations with inputs; /healthz and /readyz take none, so a few requests say it all.
ROUTES_WITH_INPUTS = (
    "/v1/models/{model}/predict",
    "/v1/models/{model}/predict/image",
    "/v1/feedback",
    "/v1/models",
    "/v1/models/{model}",
)
MIN_REQUESTS_PER_OPERATION = 100


def requests_by_route(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.match(r'^gateway_requests_total\{[^}]*route="([^"]+)"[^}]*\} (\S+)$', line)
        if match:
            counts[match[1]] = counts.get(match[1], 0) + float(match[2])
    return counts


def test_schemathesis_finds_no_server_error_no_schema_violation_and_no_warning(
    gateway, tmp_path
) -> None:
    before = requests_by_route(gateway.url)
    run = subprocess.run(
        [
            str(SCHEMATHESIS if SCHEMATHESIS.exists() else "schemathesis"),
            f"--config-file={CONFIG}",
            "run",
            f"{gateway.url}/openapi.json",
            "--checks=not_a_server_error,response_schema_conformance",
            "--mode=all",
            f"--max-examples={MAX_EXAMPLES}",
            "--seed=15",  # the same requests on every run: a failure reproduces
            "--generation-database=none",
            "--workers=1",
            "--no-color",
        ],
        # Schemathesis keeps a crash cache (.schemathesis/) in its working directory.
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.gateway.schemathesis.hooks",
            "GATEWAY_FUZZ_URL": gateway.url,
            "PYTHONPATH": str(REPO_ROOT),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Schema validation mismatch" not in output and "WARNINGS" not in output
    after = requests_by_route(gateway.url)
    made = {route: after.get(route, 0) - before.get(route, 0) for route in after}
    assert sum(made.values()) >= MIN_REQUESTS, made
    assert made.get("/healthz", 0) > 0 and made.get("/readyz", 0) > 0, made
    for route in ROUTES_WITH_INPUTS:
        assert made.get(route, 0) >= MIN_REQUESTS_PER_OPERATION, made
