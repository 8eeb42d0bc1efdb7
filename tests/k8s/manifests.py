"""Render the kustomize overlays and walk the objects they produce.

Shared by the tests in tests/k8s; the pytest fixtures that call these live in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS = ("gpu", "cpu")
# The version mk/k8s.mk validates against; one place to move when the clusters move.
K8S_VERSION = os.environ.get("K8S_VERSION", "1.32.0")
NAMESPACE = "mnist-serving"

Manifest = dict[str, Any]

POD_OWNER_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def kubectl() -> str | None:
    """Path of kubectl, or None when it is not installed."""
    return shutil.which(os.environ.get("KUBECTL", "kubectl"))


def render(kustomization_dir: Path) -> str:
    """`kubectl kustomize` a directory as `kubectl apply -k` does (default load restrictor)."""
    binary = kubectl()
    assert binary, "kubectl is not installed"
    result = subprocess.run(
        [binary, "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization_dir} failed:\n{result.stderr}")
    return result.stdout


def load_all(text: str) -> list[Manifest]:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Objects of `kind` (and `name`, when given). Generated names carry a hash suffix,
    so a name also matches `<name>-<hash>` for ConfigMaps and Secrets."""
    found = []
    for obj in objects:
        if obj["kind"] != kind:
            continue
        actual = obj["metadata"]["name"]
        if (
            name is None
            or actual == name
            or (kind in ("ConfigMap", "Secret") and actual.rsplit("-", 1)[0] == name)
        ):
            found.append(obj)
    return found


def one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The single object of `kind` named `name`; fail clearly when it is missing or doubled."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_template(obj: Manifest) -> Manifest:
    """The pod template of a workload (a CronJob's is two levels down)."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def workloads(objects: list[Manifest]) -> Iterator[Manifest]:
    """Every object that runs pods."""
    return (obj for obj in objects if obj["kind"] in POD_OWNER_KINDS)


def containers(pod_spec: Manifest) -> list[Manifest]:
    """Init and regular containers of a pod spec."""
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels-style selector matches a label set."""
    return all(labels.get(key) == value for key, value in selector.items())


def kind_name(obj: Manifest) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"
