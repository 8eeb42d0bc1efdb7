"""Session fixtures for the Kubernetes tests: each overlay is rendered once, and checkov
scans both renders in one run (its start-up dominates its cost)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.manifests import K8S_DIR, OVERLAYS, REPO_ROOT, Manifest, kubectl, load_all, render

TOOLS_BIN = REPO_ROOT / ".cache" / "k8s-tools" / "bin"


def tool(env_var: str, name: str) -> str | None:
    """A linter from env (set by mk/k8s.mk), the tools venv, or PATH."""
    for candidate in (os.environ.get(env_var), str(TOOLS_BIN / name), shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    """`kubectl kustomize` output of every overlay."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    return {overlay: render(K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[Manifest]]:
    """The objects of every overlay."""
    return {overlay: load_all(text) for overlay, text in rendered_text.items()}


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def objects(rendered: dict[str, list[Manifest]], overlay: str) -> list[Manifest]:
    """The objects of one overlay (the test runs once per overlay)."""
    return rendered[overlay]


@pytest.fixture(scope="session")
def rendered_dir(rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The renders written to files, one per overlay, for the file-based scanners."""
    directory = tmp_path_factory.mktemp("rendered")
    for overlay, text in rendered_text.items():
        (directory / f"{overlay}.yaml").write_text(text)
    return directory


@pytest.fixture(scope="session", autouse=True)
def checkov_scan(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen | None]:
    """checkov on the rendered manifests of both overlays, started as soon as they exist.

    Its start-up costs most of its run, so it works in the background while the other
    tests run; `checkov_report` waits for it. None when checkov is not installed.
    """
    checkov = tool("CHECKOV_BIN", "checkov")
    if checkov is None or kubectl() is None:  # checkov_report skips with the reason
        yield None
        return
    rendered_dir: Path = request.getfixturevalue("rendered_dir")
    output = (rendered_dir / "checkov.json").open("w")
    errors = (rendered_dir / "checkov.err").open("w")
    args = [checkov, "--directory", str(rendered_dir), "--framework", "kubernetes"]
    args += ["--output", "json", "--skip-download", "--compact"]
    process = subprocess.Popen(
        args,
        stdout=output,
        stderr=errors,
        # No network: never ask Bridgecrew's platform for policies or version updates.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_SKIP_VERSION_CHECK": "TRUE"},
    )
    output.close()
    errors.close()
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(10)


@pytest.fixture(scope="session")
def checkov_report(checkov_scan: subprocess.Popen | None, rendered_dir: Path) -> list[dict]:
    """checkov's JSON report on the rendered manifests of both overlays."""
    if checkov_scan is None:
        pytest.skip("checkov or kubectl is not installed: run `make k8s-tools`")
    returncode = checkov_scan.wait(300)
    # Exit 1 only means "some check failed"; the report says which, and the tests assert.
    stderr = (rendered_dir / "checkov.err").read_text()
    assert returncode in (0, 1), f"checkov crashed:\n{stderr[-3000:]}"
    report = json.loads((rendered_dir / "checkov.json").read_text())
    return report if isinstance(report, list) else [report]


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    hadolint = tool("HADOLINT_BIN", "hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: run `make k8s-tools`")
    return hadolint
