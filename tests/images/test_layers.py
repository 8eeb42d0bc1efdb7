"""What the images' layers hold, file by file, as a registry would receive them: no
TensorFlow in the gateway or the rollout controller, and none of this machine's pip
settings or private CAs in any image (they reach the build as secrets, mounted for one
step)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.images.buildah import (
    TENSORFLOW_PATH,
    find_in_layers,
    inspect_image,
    layer_members,
    pip_settings,
    tensorflow_paths,
)
from tests.images.conftest import IMAGE_NAMES

# The Mozilla roots every Debian image carries; a machine's own CAs are the others.
DEBIAN_ROOTS = Path("/usr/share/ca-certificates/mozilla")
# A root every Debian ca-certificates release since 2016 carries: the scan's control.
CONTROL_ROOT = DEBIAN_ROOTS / "ISRG_Root_X1.crt"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.S)
# Variables that would make every process of the image use this machine's index or CA.
BUILD_ONLY_ENV = ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE")
BUILD_ONLY_ENV += ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_TRUSTED_HOST")


def pem_bodies(path: Path) -> list[bytes]:
    """The base64 bodies of the certificates in a PEM file, whitespace removed."""
    return [re.sub(rb"\s", b"", body) for body in PEM.findall(path.read_bytes())]


def certificate_needle(body: bytes) -> bytes:
    """A 64-character PEM line from inside a certificate (its subject and key, not the
    DER header every certificate shares), as it would appear in a copied PEM file."""
    return body[128:192]


def machine_cas(bundle: Path) -> list[bytes]:
    """Certificates of `bundle` that are not Debian's Mozilla roots: this machine's own."""
    debian = {body for crt in DEBIAN_ROOTS.glob("*.crt") for body in pem_bodies(crt)}
    return [body for body in pem_bodies(bundle) if body not in debian]


def test_tensorflow_pattern_tells_an_install_from_proto_sources() -> None:
    installed = [
        "opt/venv/lib/python3.11/site-packages/tensorflow/__init__.py",
        "opt/venv/lib/python3.11/site-packages/tensorflow-2.21.0.dist-info/METADATA",
        "opt/venv/lib/python3.11/site-packages/keras/src/models.py",
        "opt/venv/lib/python3.11/site-packages/tensorflow_serving/apis/predict_pb2.py",
        "usr/lib/libtensorflow_framework.so.2",
    ]
    not_installed = [
        "app/gateway/protos/tensorflow/core/framework/tensor.proto",
        "app/gateway/protos/tensorflow_serving/apis/predict.proto",
        "opt/venv/lib/python3.11/site-packages/grpc/_cython/cygrpc.so",
    ]
    assert all(TENSORFLOW_PATH.search(path) for path in installed)
    assert not any(TENSORFLOW_PATH.search(path) for path in not_installed)


@pytest.mark.images
@pytest.mark.parametrize("name", ["gateway", "rollout"])
def test_image_holds_no_tensorflow(name: str, layers_of: Callable[[str], list[Path]]) -> None:
    layers = layers_of(name)
    assert sum(1 for _ in layer_members(layers)) > 1000, "the scan read almost nothing"
    assert tensorflow_paths(layers) == []


@pytest.mark.images
def test_tensorflow_scan_finds_the_trainer_images_tensorflow(
    layers_of: Callable[[str], list[Path]],
) -> None:
    """The control of the test above: the same scan on the image that has TensorFlow."""
    found = tensorflow_paths(layers_of("trainer"))
    assert any("site-packages/tensorflow/" in path for path in found), found[:20]


@pytest.mark.images
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_no_build_secret_reaches_the_image(
    name: str, build_image: Callable[[str], str], layers_of: Callable[[str], list[Path]]
) -> None:
    """Neither the pip.conf the build mounted, nor the index URLs in it, nor this
    machine's own CAs are in any layer, the history or the config."""
    text, bundle = pip_settings.build_settings(pip_settings.read_pip_config(), dict(os.environ))
    urls = [
        value
        for line in text.splitlines()
        if line.split(" = ")[0] in {"index-url", "extra-index-url", "proxy"}
        for value in line.split(" = ", 1)[1].split()
    ]
    needles = [text.encode(), *(url.encode() for url in urls)]
    if bundle is not None:
        needles += [certificate_needle(body) for body in machine_cas(bundle)]
    reference = build_image(name)
    metadata = json.dumps(inspect_image(reference))
    assert not [n for n in needles if n.decode() in metadata], "a build secret is in the metadata"
    if bundle is not None:
        assert str(bundle) not in metadata, (
            "the CA bundle's path on this machine is in the metadata"
        )
    env = inspect_image(reference)["Docker"]["config"].get("Env") or []
    assert not [item for item in env if item.split("=")[0] in BUILD_ONLY_ENV], env

    layers = layers_of(name)
    assert find_in_layers(layers, needles) == []
    secret_files = [
        member.name
        for _, _, member in layer_members(layers)
        if member.name.startswith("run/secrets/") and not member.isdir()
    ]
    assert secret_files == []
    # The control: the same scan finds a CA the image does carry (Debian's own roots).
    control = certificate_needle(pem_bodies(CONTROL_ROOT)[0])
    assert find_in_layers(layers, [control]), "the scan cannot find a certificate in a layer"
