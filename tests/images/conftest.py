"""Fixtures of the image tests: images built by `make image-<name>`, the rendered
manifests that run them, and working containers to run them in.

The images come from the same make target as `make images`, into its cache
(.cache/images/), so a rebuild with nothing changed takes seconds. `make test` tests the
gateway image; `make test-images` sets IMAGE_TESTS=all and tests every image, the
trainer's training run included. Without root, buildah or debootstrap the tests that
need an image skip, saying which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import REPO_ROOT
from tests.images.buildah import DOCKER_DIR, WorkingContainer, export_layers
from tests.k8s.manifests import (
    K8S_DIR,
    OVERLAYS,
    Manifest,
    containers,
    kubectl,
    load_all,
    pod_template,
    render,
    workloads,
)

IMAGE_NAMES = sorted(
    path.name.removesuffix(".Dockerfile") for path in DOCKER_DIR.glob("*.Dockerfile")
)
# What `make test` builds and tests; `make test-images` adds the rest.
IMAGES_IN_MAKE_TEST = {"gateway", "rollout"}
ALL_IMAGES = os.environ.get("IMAGE_TESTS") == "all"
BUILD_TIMEOUT = 1800
# Figures (build time, size) printed at the end of the run, never asserted.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report what the image builds printed: time and size of each image."""
    if FIGURES:
        terminalreporter.section("container images")
        for line in FIGURES:
            terminalreporter.write_line(line)


def missing_tools() -> str | None:
    """Why images cannot be built and run here, or None when they can."""
    if os.geteuid() != 0:
        return "buildah builds and runs the images as root here (chroot isolation): not root"
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: run `make image-tools` as root"
    return None


def make(*targets: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run make on the repository with its default REGISTRY and IMAGE_TAG (the ones the
    manifests name), whatever the calling make was given."""
    unset = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "REGISTRY", "IMAGE_TAG", "PYTHON_IMAGE"}
    return subprocess.run(
        ["make", "--no-print-directory", *targets],
        cwd=REPO_ROOT,
        env={key: value for key, value in os.environ.items() if key not in unset},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def image_references() -> dict[str, str]:
    """name -> the reference `make images` tags it with, from `make image-list`."""
    result = make("-s", "image-list", timeout=60)
    assert result.returncode == 0, result.stderr
    references = result.stdout.split()
    return {reference.rsplit("/", 1)[1].split(":")[0]: reference for reference in references}


@pytest.fixture(scope="session")
def build_image(image_references: dict[str, str]) -> Callable[[str], str]:
    """build_image(name): `make image-<name>` once per session; returns the reference.

    Skips images outside IMAGES_IN_MAKE_TEST unless IMAGE_TESTS=all, and every image when
    the tools are missing.
    """
    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in IMAGES_IN_MAKE_TEST and not ALL_IMAGES:
            pytest.skip(f"the {name} image is built and tested by `make test-images`")
        reason = missing_tools()
        if reason:
            pytest.skip(reason)
        if name not in built:
            result = make(f"image-{name}", timeout=BUILD_TIMEOUT)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"make image-{name} failed:\n{output[-5000:]}"
            FIGURES.extend(
                line for line in result.stdout.splitlines() if line.startswith("images:")
            )
            built[name] = image_references[name]
        return built[name]

    return build


@pytest.fixture(scope="session")
def layers_of(
    build_image: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], list[Path]]:
    """layers_of(name): the image's layers as uncompressed tarballs, exported once."""
    exported: dict[str, list[Path]] = {}

    def export(name: str) -> list[Path]:
        if name not in exported:
            exported[name] = export_layers(build_image(name), tmp_path_factory.mktemp(name))
        return exported[name]

    return export


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """The objects of every overlay, as `kubectl apply -k` would create them."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    return {overlay: load_all(render(K8S_DIR / "overlays" / overlay)) for overlay in OVERLAYS}


def pods_running(objects: list[Manifest], reference: str) -> list[tuple[Manifest, Manifest]]:
    """(pod spec, container) of every container that runs image `reference`."""
    found = []
    for workload in workloads(objects):
        spec = pod_template(workload)["spec"]
        found += [(spec, c) for c in containers(spec) if c["image"] == reference]
    return found


@pytest.fixture
def container_factory() -> Iterator[Callable[[str], WorkingContainer]]:
    """container_factory(reference): a working container of the image, removed after."""
    created: list[WorkingContainer] = []

    def create(reference: str) -> WorkingContainer:
        created.append(WorkingContainer.create(reference))
        return created[-1]

    yield create
    for container in created:
        container.remove()


def writable_mounts(container: Manifest, root: Path) -> dict[Path, str]:
    """A fresh host directory for each of the container's volumeMounts (emptyDirs and
    claims alike), mode 0777 as an emptyDir is; everything else stays read-only."""
    volumes = {}
    for mount in container.get("volumeMounts", []):
        if mount.get("readOnly"):
            continue
        host = root / mount["name"]
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o777)
        volumes[host] = mount["mountPath"]
    return volumes
