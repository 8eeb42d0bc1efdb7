"""The Dockerfiles, checked without a Docker engine: what each image installs, that the
gateway and rollout images have no TensorFlow and run as non-root, and that their proto
builds work."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.k8s.manifests import REPO_ROOT

DOCKER_DIR = REPO_ROOT / "docker"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-serving-api", "keras"}
# What a multi-stage image's runtime stage copies from the build context, not the builder.
CONTEXT_DATA = {"rollout": ["monitoring/rules /app/monitoring/rules"]}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each starts at a FROM)."""
    grouped: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append((keyword, rest))
    return grouped


def requirements_snippet(dockerfile: Path) -> str:
    """The `python -c` program a Dockerfile uses to list an extra's requirements."""
    for keyword, rest in instructions(dockerfile):
        match = re.search(r'python -c "(import tomllib;.*?)"', rest)
        if keyword == "RUN" and match:
            return match[1]
    raise AssertionError(f"{dockerfile.name} does not read its requirements from pyproject")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(requirements: list[str]) -> set[str]:
    """Every distribution `requirements` pull in, resolved from the installed venv."""
    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = normalize(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: it cannot be resolved further, but it is named
        for sub in distribution.requires or []:
            sub_requirement = Requirement(sub)
            extras = requirement.extras or {""}
            if sub_requirement.marker is None or any(
                sub_requirement.marker.evaluate({"extra": extra}) for extra in extras
            ):
                pending.append(sub_requirement)
    return seen


@pytest.mark.parametrize("extra", ["gateway", "trainer", "rollout"])
def test_each_image_installs_exactly_its_extra(extra: str, tmp_path: Path) -> None:
    snippet = requirements_snippet(DOCKER_DIR / f"{extra}.Dockerfile")
    assert f"['{extra}']" in snippet
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    listed = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split("\n")
    assert [line for line in listed if line] == EXTRAS[extra]


DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.stem)
def test_build_inputs_are_copied_not_bind_mounted(dockerfile: Path) -> None:
    """buildah's layer cache ignores a bind mount's content (containers/buildah#5400): a
    RUN that reads pyproject.toml through one would reuse a stale install after an edit.
    COPY makes the files part of the cache key. Secret mounts carry no build input."""
    for keyword, rest in instructions(dockerfile):
        mounts = re.findall(r"--mount=(\S+)", rest) if keyword == "RUN" else []
        assert not [m for m in mounts if "type=secret" not in m], (dockerfile.name, rest[:200])


@pytest.mark.parametrize(("extra", "resolved"), [("gateway", "fastapi"), ("rollout", "kubernetes")])
def test_extra_pulls_in_no_tensorflow(extra: str, resolved: str) -> None:
    closure = dependency_closure(EXTRAS[extra])
    assert resolved in closure and "grpcio" in closure  # the walk did resolve something
    assert not closure & TENSORFLOW_DISTRIBUTIONS, sorted(closure & TENSORFLOW_DISTRIBUTIONS)


def test_tensorflow_check_would_catch_the_trainer_extra() -> None:
    assert dependency_closure(EXTRAS["trainer"]) & TENSORFLOW_DISTRIBUTIONS


@pytest.mark.parametrize("image", ["gateway", "rollout"])
def test_image_is_multi_stage_slim_and_non_root(image: str) -> None:
    builder, runtime = stages(DOCKER_DIR / f"{image}.Dockerfile")
    arguments = dict(instructions(DOCKER_DIR / f"{image}.Dockerfile"))
    assert "slim" in arguments["ARG"], f"the {image}'s base image must be a slim Python"
    runtime_text = "\n".join(f"{k} {v}" for k, v in runtime)
    assert "pip install" not in runtime_text, "the runtime stage installs nothing itself"
    assert "grpcio-tools" not in runtime_text and "/opt/protoc" not in runtime_text
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    # Everything comes built from the builder, except plain data (the rules the rollout
    # controller templates its PromQL from).
    from_context = [copy for copy in copies if not copy.startswith("--from=builder")]
    assert copies and from_context == CONTEXT_DATA.get(image, [])
    user = [rest for keyword, rest in runtime if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert dict(runtime)["ENTRYPOINT"] == f'["python", "-m", "{image}"]'
    assert any("grpcio-tools==" in rest for _, rest in builder), "grpcio-tools is unpinned"


def test_trainer_image_runs_the_trainer_as_non_root() -> None:
    (only_stage,) = stages(DOCKER_DIR / "trainer.Dockerfile")
    user = [rest for keyword, rest in only_stage if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert dict(only_stage)["ENTRYPOINT"] == '["python", "-m", "trainer"]'


def run_builder_protoc(package: str, tmp_path: Path) -> Path:
    """Run `docker/<package>.Dockerfile`'s builder protoc step (grpcio-tools from this venv)
    on a copy of `<package>/protos`, in the builder's WORKDIR layout; return the `_proto`
    directory it wrote."""
    workdir, command = None, None
    for keyword, rest in stages(DOCKER_DIR / f"{package}.Dockerfile")[0]:
        if keyword == "WORKDIR":
            workdir = rest
        if keyword == "RUN" and "grpc_tools.protoc" in rest:
            command = rest
            break
    assert workdir == f"/src/{package}/protos" and command
    sandbox = tmp_path / package
    shutil.copytree(REPO_ROOT / package / "protos", sandbox / "protos")
    command = command.replace("/opt/protoc/bin/python", shlex.quote(sys.executable))
    subprocess.run(
        ["/bin/bash", "-o", "pipefail", "-c", command],
        cwd=sandbox / "protos",
        check=True,
        timeout=120,
        capture_output=True,
    )
    return sandbox / "_proto"


def test_gateway_builder_compiles_the_descriptor_set_the_gateway_loads(tmp_path: Path) -> None:
    """Run the builder stage's protoc step (grpcio-tools from this venv) on gateway/protos."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2

    from gateway import tfs_protos

    built = run_builder_protoc("gateway", tmp_path) / tfs_protos.DESCRIPTOR_SET.name
    assert tfs_protos.DESCRIPTOR_SET.relative_to(REPO_ROOT / "gateway") == built.relative_to(
        tmp_path / "gateway"
    )
    file_set = descriptor_pb2.FileDescriptorSet.FromString(built.read_bytes())
    services = {
        f"{proto.package}.{service.name}" for proto in file_set.file for service in proto.service
    }
    assert "tensorflow.serving.PredictionService" in services


def test_rollout_builder_compiles_the_descriptor_set_the_controller_loads(tmp_path: Path) -> None:
    """The builder's protoc step on rollout/protos writes every descriptor set the rollout
    package names (a `*.binpb` under _proto/), with TF Serving's config and model service."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2

    named = {
        name
        for source in (REPO_ROOT / "rollout").rglob("*.py")
        for name in re.findall(r"([A-Za-z0-9_]+\.binpb)", source.read_text())
    }
    assert named, "no rollout module names the descriptor set it loads"
    proto_dir = run_builder_protoc("rollout", tmp_path)
    built = {path.name for path in proto_dir.glob("*.binpb")}
    assert named <= built, f"the package loads {sorted(named)}; the image builds {sorted(built)}"
    file_set = descriptor_pb2.FileDescriptorSet()
    for name in built:
        file_set.MergeFromString((proto_dir / name).read_bytes())
    messages = {
        f"{proto.package}.{message.name}"
        for proto in file_set.file
        for message in proto.message_type
    }
    services = {
        f"{proto.package}.{service.name}" for proto in file_set.file for service in proto.service
    }
    assert "tensorflow.serving.ModelServerConfig" in messages
    assert "tensorflow.serving.ModelService" in services


@pytest.mark.parametrize("image", ["gateway", "trainer", "rollout"])
def test_build_context_holds_what_the_dockerfile_copies(image: str) -> None:
    """<name>.Dockerfile.dockerignore ignores everything, then re-includes the sources."""
    ignore = (DOCKER_DIR / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for keyword, rest in instructions(DOCKER_DIR / f"{image}.Dockerfile"):
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in included, f"COPY {source} is outside the context"
