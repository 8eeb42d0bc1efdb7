"""Security policy: checkov on the rendered manifests, hadolint on the Dockerfiles, and
the pod security invariants the issue lists, asserted directly on every container."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.k8s.manifests import (
    REPO_ROOT,
    Manifest,
    containers,
    kind_name,
    pod_template,
    workloads,
)

DOCKERFILES = sorted((REPO_ROOT / "docker").glob("*.Dockerfile"))
# An image reference with an explicit tag (or digest) that is not a moving one.
PINNED_IMAGE = re.compile(r"^[^:@\s]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
MOVING_TAGS = {"latest", "stable", "nightly", "edge"}


def test_checkov_finds_nothing_unexplained(checkov_report: list[dict]) -> None:
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"
        for report in checkov_report
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov findings to fix or skip with a reason:\n" + "\n".join(failed)


def test_checkov_ran_its_kubernetes_checks(checkov_report: list[dict]) -> None:
    """Guards against a silent no-op scan (wrong framework, unreadable files)."""
    passed = sum(len(report["results"]["passed_checks"]) for report in checkov_report)
    assert passed > 100, f"checkov passed only {passed} checks: did it scan anything?"


def test_every_checkov_skip_states_its_reason(checkov_report: list[dict]) -> None:
    skipped = [check for report in checkov_report for check in report["results"]["skipped_checks"]]
    unexplained = [
        f"{check['check_id']} on {check['resource']}"
        for check in skipped
        if len((check["check_result"].get("suppress_comment") or "").strip()) < 20
    ]
    assert not unexplained, f"skips without a stated reason: {unexplained}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(hadolint_bin: str, dockerfile) -> None:
    result = subprocess.run(
        [hadolint_bin, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_a_bad_dockerfile(hadolint_bin: str, tmp_path) -> None:
    """The linter is live: an unpinned base image and a root user are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN pip install flask\nUSER root\n")
    result = subprocess.run(
        [hadolint_bin, "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # always tag the version of an image explicitly


def container_problems(workload: Manifest) -> list[str]:
    """Every way the pod or its containers miss the security baseline."""
    spec = pod_template(workload)["spec"]
    pod_security = spec.get("securityContext", {})
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("pod mounts a service account token")
    for container in containers(spec):
        where = f"{kind_name(workload)} container {container['name']}"
        security = {**pod_security, **container.get("securityContext", {})}
        if security.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities are not all dropped")
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccomp profile is not RuntimeDefault")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problems.append(f"{where}: no {resource} {kind}")
        image = container["image"]
        tag = image.split("@")[0].rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        if not PINNED_IMAGE.match(image) or not tag or tag in MOVING_TAGS:
            problems.append(f"{where}: image {image!r} has no pinned tag")
    return problems


def test_every_container_meets_the_security_baseline(objects: list[Manifest]) -> None:
    problems = [
        problem for workload in workloads(objects) for problem in container_problems(workload)
    ]
    assert not problems, "\n".join(problems)


def test_security_baseline_check_catches_a_regression(objects: list[Manifest]) -> None:
    """Dropping one setting from one container is reported."""
    import copy

    gateway = copy.deepcopy(next(o for o in objects if kind_name(o) == "Deployment/gateway"))
    container = pod_template(gateway)["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["image"] = "registry.example.com/mnist-serving/gateway:latest"
    problems = container_problems(gateway)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("no pinned tag" in p for p in problems)


def test_no_secret_value_is_committed(objects: list[Manifest]) -> None:
    secrets = [kind_name(obj) for obj in objects if obj["kind"] == "Secret"]
    assert not secrets, f"Secrets must be created out of band, not rendered: {secrets}"
