"""Each built image's config, and the manifests that run it, agree: the images the
manifests name are the ones `make images` builds, under the same name and tag; the pods'
users, commands and ports are the images' own."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.images.buildah import effective_command, exposed_ports, image_config
from tests.images.conftest import IMAGE_NAMES, pods_running
from tests.k8s.manifests import Manifest, containers, pod_template, workloads

NUMERIC_USER = re.compile(r"^(\d+)(?::(\d+))?$")


def manifest_images(rendered: dict[str, list[Manifest]]) -> set[str]:
    """Every image any container of any overlay runs."""
    return {
        container["image"]
        for objects in rendered.values()
        for workload in workloads(objects)
        for container in containers(pod_template(workload)["spec"])
    }


def test_every_project_image_the_manifests_name_is_built_by_make_images(
    rendered: dict[str, list[Manifest]], image_references: dict[str, str]
) -> None:
    """Images under the project's registry must be ones `make images` tags, name and tag;
    the others (TF Serving, the Pushgateway) are pulled from their publishers."""
    registries = {reference.rsplit("/", 1)[0] for reference in image_references.values()}
    assert len(registries) == 1, registries
    (registry,) = registries
    ours = {image for image in manifest_images(rendered) if image.startswith(f"{registry}/")}
    assert ours, f"no manifest runs an image from {registry}: is the registry prefix wrong?"
    unbuilt = sorted(ours - set(image_references.values()))
    assert not unbuilt, f"the manifests run images make images does not build: {unbuilt}"


@pytest.mark.images
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_image_runs_as_the_non_root_numeric_user_the_pods_expect(
    name: str, build_image: Callable[[str], str], rendered: dict[str, list[Manifest]]
) -> None:
    reference = build_image(name)
    user = image_config(reference).get("User", "")
    match = NUMERIC_USER.match(user)
    # Numeric, so the kubelet can check runAsNonRoot without reading the image's passwd.
    assert match, f"{name}: USER {user!r} is not a numeric uid[:gid]"
    assert int(match[1]) != 0, f"{name} runs as root"
    for objects in rendered.values():
        for spec, container in pods_running(objects, reference):
            security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            assert security.get("runAsUser", int(match[1])) == int(match[1])
            if match[2]:
                assert security.get("runAsGroup", int(match[2])) == int(match[2])


@pytest.mark.images
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_manifest_commands_and_ports_are_the_images(
    name: str, build_image: Callable[[str], str], rendered: dict[str, list[Manifest]]
) -> None:
    """A container without `command` runs the image's ENTRYPOINT (plus its args, or the
    image's CMD); its containerPorts are the ports the image EXPOSEs."""
    reference = build_image(name)
    config = image_config(reference)
    for objects in rendered.values():
        for _, container in pods_running(objects, reference):
            if "command" not in container:
                assert config.get("Entrypoint"), f"{container['name']} relies on an ENTRYPOINT"
            assert effective_command(config, container), f"{container['name']} runs nothing"
            ports = {port["containerPort"] for port in container.get("ports", [])}
            assert ports == exposed_ports(config), (container["name"], ports, config)
