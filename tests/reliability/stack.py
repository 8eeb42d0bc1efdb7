"""The pieces the scenarios assemble: gateway processes, model configs, repository edits.

The gateways and model servers are real processes started by the shared fixtures'
launchers (tests/fixtures/gateway.py, tests/fixtures/serving.py) on free loopback ports.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.fixtures.gateway import Gateway
from tests.fixtures.gateway import launch_gateway as fixture_launch_gateway
from tests.fixtures.processes import REPO_ROOT

MODEL = "mnist"
PREDICT_PATH = f"/v1/models/{MODEL}/predict"
REPORT_DIR = REPO_ROOT / "reports" / "reliability"


def launch_gateway(log_dir: Path, serving_target: str, **settings: object) -> Gateway:
    """Start the gateway (tests/fixtures/gateway.py) and return once /healthz answers.

    `settings` are GATEWAY_* settings without the prefix, e.g. `canary_percent=20`; the
    limits not given keep the gateway's production defaults, which are what is tested.
    """
    return fixture_launch_gateway(log_dir, serving_target, wait="healthy", **settings)


def rss_bytes(gateway: Gateway) -> int:
    """Resident memory of the gateway process, from /proc."""
    for line in Path(f"/proc/{gateway.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def wait_ready(gateway: Gateway, timeout: float = 60.0) -> None:
    """Poll /readyz until the gateway's default model has an AVAILABLE version."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{gateway.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gateway {gateway.url} not ready after {timeout:.0f}s")


def predict_body(images: np.ndarray, count: int = 1, offset: int = 0) -> bytes:
    """A predict body of `count` real MNIST digits (0-255 integers)."""
    instances = [images[(offset + i) % len(images)].tolist() for i in range(count)]
    return json.dumps({"instances": instances, "value_range": "0-255"}).encode()


def model_status(gateway: Gateway, model: str = MODEL) -> dict[str, Any]:
    """GET /v1/models/{model}: versions with state and error."""
    response = httpx.get(f"{gateway.url}/v1/models/{model}", timeout=5)
    response.raise_for_status()
    return response.json()


def version_states(gateway: Gateway) -> dict[int, str]:
    """{version: state} from the gateway's status API."""
    return {row["version"]: row["state"] for row in model_status(gateway)["versions"]}


def publish_copy(model_dir: Path, source_version: int, new_version: int) -> Path:
    """Publish a copy of a version under a new number, atomically (temp dir + rename)."""
    staging = model_dir / f".staging-{new_version}"
    shutil.copytree(model_dir / str(source_version), staging)
    target = model_dir / str(new_version)
    staging.rename(target)
    return target


def publish_corrupt(model_dir: Path, source_version: int, new_version: int, fault: str) -> Path:
    """Publish a broken copy: `truncated` saved_model.pb, or `no_variables`."""
    staging = model_dir / f".staging-{new_version}"
    shutil.copytree(model_dir / str(source_version), staging)
    if fault == "truncated":
        graph = staging / "saved_model.pb"
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])
    elif fault == "no_variables":
        shutil.rmtree(staging / "variables")
    else:
        raise ValueError(f"unknown fault {fault!r}")
    target = model_dir / str(new_version)
    staging.rename(target)
    return target


def write_labelled_config(path: Path, base_path: Path, labels: dict[str, int]) -> Path:
    """A models.config (TF Serving text proto) serving the labelled versions of `mnist`."""
    versions = " ".join(f"versions: {v}" for v in sorted(set(labels.values())))
    label_lines = "\n".join(
        f'    version_labels {{ key: "{key}" value: {value} }}' for key, value in labels.items()
    )
    path.write_text(
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{MODEL}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ {versions} }} }}\n"
        f"{label_lines}\n"
        "  }\n"
        "}\n"
    )
    return path


def write_report(scenario: str, summary: dict[str, Any]) -> Path:
    """Write reports/reliability/<scenario>.json and print the one-line summary."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{scenario}.json"
    path.write_text(json.dumps({"scenario": scenario, **summary}, indent=2, sort_keys=True))
    headline = {
        key: summary[key]
        for key in ("requests", "failures", "unexpected", "recovery_seconds")
        if key in summary
    }
    print(f"\n[reliability] {scenario}: {json.dumps(headline)}")
    return path
