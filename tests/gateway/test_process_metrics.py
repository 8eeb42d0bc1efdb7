"""The gateway exports its process's CPU and memory under Prometheus' standard names."""

from __future__ import annotations

import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process metrics are read from /proc"
)


def test_metrics_carry_the_process_cpu_and_memory(gateway):
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text

    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["process_cpu_seconds_total"] > 0
    # A running gateway holds FastAPI, numpy and gRPC: tens of MiB at least.
    assert samples["process_resident_memory_bytes"] > 20 * 2**20
