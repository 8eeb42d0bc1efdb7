"""The gateway image runs: its own ENTRYPOINT, in its own filesystem (`buildah run`), with
the env the manifests give it. It answers its probes, serves real predictions from the
local model server, and starts with a read-only root and only the manifests' mounts."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fixtures.processes import ManagedProcess, free_port
from tests.images.buildah import WorkingContainer, effective_command, image_config, images_tool
from tests.images.conftest import writable_mounts
from tests.k8s.manifests import Manifest, one, pod_template
from tests.k8s.test_consistency import container_env

pytestmark = pytest.mark.images

START_TIMEOUT = 60.0
# What the gateway-secrets Secret holds in a cluster (README's deploy steps).
SECRETS = {
    "GATEWAY_API_KEYS": "image-test-key",
    "GATEWAY_FEEDBACK_SECRET": "0123456789abcdef0123456789abcdef",
}


@pytest.fixture(scope="module")
def gateway_image(build_image: Callable[[str], str]) -> str:
    return build_image("gateway")


@pytest.fixture(scope="module")
def deployed(rendered: dict[str, list[Manifest]]) -> tuple[Manifest, dict[str, str]]:
    """The gateway container of the gpu overlay, and the env its pods get."""
    objects = rendered["gpu"]
    container = pod_template(one(objects, "Deployment", "gateway"))["spec"]["containers"][0]
    return container, {**container_env(container, objects), **SECRETS}


@pytest.fixture
def start_gateway(
    gateway_image: str,
    container_factory: Callable[[str], WorkingContainer],
    deployed: tuple[Manifest, dict[str, str]],
    tmp_path: Path,
) -> Iterator[Callable[..., str]]:
    """start_gateway(serving_target, read_only=False, **GATEWAY_settings): the image's
    command as the pods run it, on a free loopback port; returns its URL once /healthz
    answers."""
    started: list[ManagedProcess] = []

    def start(serving_target: str, read_only: bool = False, **settings: str) -> str:
        container_spec, env = deployed
        config = image_config(gateway_image)
        port = free_port()
        # Loopback and a free port for the test; everything else as deployed.
        env = {**env, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port)}
        env.update(GATEWAY_SERVING_TARGET=serving_target, **settings)
        container = container_factory(gateway_image)
        args = container.run_args(
            effective_command(config, container_spec),
            env=env,
            volumes=writable_mounts(container_spec, tmp_path / f"volumes-{port}"),
            read_only_root=config["User"] if read_only else None,
        )
        process = ManagedProcess(
            args, tmp_path / f"gateway-{port}.log", env=images_tool.buildah_env()
        ).start()
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, START_TIMEOUT
        )
        return url

    yield start
    for process in started:
        process.stop()


def test_image_answers_its_probes_without_a_model_server(
    start_gateway: Callable[..., str],
) -> None:
    url = start_gateway(f"127.0.0.1:{free_port()}")
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 503, ready.text
    assert ready.json()["error"]["code"] == "not_ready"


def png_of(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_serves_real_predictions_from_the_model_server(
    start_gateway: Callable[..., str],
    model_server,
    mnist_test_images: tuple[np.ndarray, np.ndarray],
) -> None:
    # The test's model server labels no version "stable" (serving/config/models.config
    # does, in the cluster): un-pinned traffic goes to its latest version instead.
    url = start_gateway(model_server.grpc_target, GATEWAY_DEFAULT_LABEL="")
    headers = {"X-API-Key": SECRETS["GATEWAY_API_KEYS"]}
    images, labels = mnist_test_images[0][:64], mnist_test_images[1][:64]
    response = httpx.post(
        f"{url}/v1/models/mnist/predict",
        json={"instances": (images / 255.0).tolist()},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    classes = np.array([p["class"] for p in response.json()["predictions"]])
    assert (classes == labels).mean() >= 0.8, classes
    # A PNG through Pillow and the multipart parser, native code of the image's own wheels.
    upload = httpx.post(
        f"{url}/v1/models/mnist/predict/image",
        files={"file": ("digit.png", png_of(images[0]), "image/png")},
        headers=headers,
        timeout=30,
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["predictions"][0]["class"] == classes[0]


def test_image_starts_with_a_read_only_root_and_the_manifests_mounts(
    start_gateway: Callable[..., str],
) -> None:
    url = start_gateway(f"127.0.0.1:{free_port()}", read_only=True)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503


def test_read_only_root_is_read_only_but_the_mounts_are_writable(
    gateway_image: str,
    container_factory: Callable[[str], WorkingContainer],
    deployed: tuple[Manifest, dict[str, str]],
    tmp_path: Path,
) -> None:
    """The control of the test above: the harness does make / read-only for that user."""
    container_spec, _ = deployed
    volumes = writable_mounts(container_spec, tmp_path)
    assert volumes, "the gateway's manifest mounts nothing writable (not even /tmp)"
    container = container_factory(gateway_image)
    probes = " && ".join(f"touch {target}/probe" for target in volumes.values())
    user = image_config(gateway_image)["User"]
    writable = container.run(
        ["sh", "-c", f"{probes} && id -u"], volumes=volumes, read_only_root=user
    )
    assert writable.returncode == 0, writable.stderr
    assert writable.stdout.split()[-1] == user.split(":")[0]
    for host in volumes:
        assert (host / "probe").exists()
    root = container.run(["touch", "/var/tmp/probe"], volumes=volumes, read_only_root=user)
    assert root.returncode != 0 and "Read-only file system" in root.stderr, root.stderr
