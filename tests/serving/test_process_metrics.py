"""The embedded server exports its process's CPU and memory under Prometheus' standard names."""

from __future__ import annotations

import os
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import ServingMetrics
from tests.serving.helpers import metric_value

PROCESS_METRICS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge",
}

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process metrics are read from /proc"
)


def resident_bytes_now() -> int:
    """This process's resident set size, from /proc/self/statm (pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_exposition_holds_process_metrics_beside_tf_serving_names():
    metrics = ServingMetrics()
    metrics.request_count.inc("mnist", "OK")

    text = metrics.render()

    # The whole exposition parses as one document: every name once, each with its type.
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, kind in PROCESS_METRICS.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert families[family_name].type == kind, name
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 1' in text
    # The figures are this process's own, not placeholders.
    assert metric_value(text, "process_resident_memory_bytes") == pytest.approx(
        resident_bytes_now(), rel=0.2
    )
    assert metric_value(text, "process_cpu_seconds_total") > 0


def test_the_running_server_serves_them_on_its_metrics_path(model_server):
    text = httpx.get(model_server.metrics_url, timeout=10).text

    for name in PROCESS_METRICS:
        assert f"\n{name} " in text, name
    # The model server holds TensorFlow and a model: far more than an idle interpreter.
    assert metric_value(text, "process_resident_memory_bytes") > 100 * 2**20
    assert metric_value(text, "process_cpu_seconds_total") > 0
