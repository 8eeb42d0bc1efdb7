"""The gateway as its image and the gpu overlay run it: the /app layout the Dockerfile
builds (sources plus the descriptor set its builder stage compiles), the env of the
gateway-config ConfigMap, secrets as the Secret would supply them, and no TensorFlow
importable. The probes' paths must answer."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.processes import ManagedProcess, free_port
from tests.k8s.manifests import REPO_ROOT, Manifest, one, pod_template
from tests.k8s.test_docker import DOCKER_DIR, stages

# Shadows any installed TensorFlow: importing it fails as it would in the image.
NO_TENSORFLOW = 'raise ImportError("tensorflow is not installed in the gateway image")\n'


def build_app_layout(root: Path) -> Path:
    """/app of the gateway image: the gateway package and its compiled descriptor set."""
    app = root / "app"
    shutil.copytree(
        REPO_ROOT / "gateway",
        app / "gateway",
        ignore=shutil.ignore_patterns("_proto", "__pycache__"),
    )
    command = next(
        rest
        for keyword, rest in stages(DOCKER_DIR / "gateway.Dockerfile")[0]
        if keyword == "RUN" and "grpc_tools.protoc" in rest
    )
    command = command.replace("/opt/protoc/bin/python", shlex.quote(sys.executable))
    subprocess.run(
        ["/bin/bash", "-o", "pipefail", "-c", command],
        cwd=app / "gateway" / "protos",
        check=True,
        timeout=120,
        capture_output=True,
    )
    blocker = root / "blocker" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(NO_TENSORFLOW)
    return app


@pytest.fixture(scope="module")
def gateway_from_image(
    rendered: dict[str, list[Manifest]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The gateway started from the image layout with the gpu overlay's env; yields its URL."""
    pytest.importorskip("grpc_tools")
    root = tmp_path_factory.mktemp("gateway-image")
    app = build_app_layout(root)
    objects = rendered["gpu"]
    container = pod_template(one(objects, "Deployment", "gateway"))["spec"]["containers"][0]
    config_name = container["envFrom"][0]["configMapRef"]["name"]
    config = next(o for o in objects if o["metadata"]["name"] == config_name)["data"]
    port, unreachable, metrics_port = free_port(), free_port(), free_port()
    env = {
        **config,
        # Loopback and free ports for the test; everything else as deployed.
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_SERVING_TARGET": f"127.0.0.1:{unreachable}",
        "GATEWAY_METRICS_PORT": str(metrics_port),
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{unreachable}/0",
        # What `kubectl create secret` would hold (see the README's deploy steps).
        "GATEWAY_API_KEYS": "k8s-test-key",
        "GATEWAY_FEEDBACK_SECRET": "0123456789abcdef0123456789abcdef",
        "PYTHONPATH": f"{root / 'blocker'}:{app}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    process = ManagedProcess(
        [sys.executable, "-m", "gateway"], root / "gateway.log", env=env, cwd=app
    ).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60)
    yield url, metrics_port
    process.stop()


def test_gateway_runs_from_the_image_layout_without_tensorflow(gateway_from_image) -> None:
    url, _ = gateway_from_image
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_readiness_fails_while_tf_serving_is_unreachable(gateway_from_image) -> None:
    """The readiness probe keeps a gateway without a model server out of the Service."""
    url, _ = gateway_from_image
    response = httpx.get(f"{url}/readyz", timeout=10)
    assert response.status_code == 503, response.text


def test_metrics_are_served_where_the_scrape_annotation_points(
    gateway_from_image, rendered: dict[str, list[Manifest]]
) -> None:
    """/metrics is on GATEWAY_METRICS_PORT (fenced to Prometheus), not the API port."""
    url, metrics_port = gateway_from_image
    objects = rendered["gpu"]
    pod = pod_template(one(objects, "Deployment", "gateway"))
    annotations = pod["metadata"]["annotations"]
    config = next(o for o in objects if o["metadata"]["name"].startswith("gateway-config-"))
    assert annotations["prometheus.io/port"] == config["data"]["GATEWAY_METRICS_PORT"]
    httpx.get(f"{url}/healthz", timeout=5)  # at least one counted request
    path = annotations["prometheus.io/path"]
    response = httpx.get(f"http://127.0.0.1:{metrics_port}{path}", timeout=5)
    assert response.status_code == 200
    assert "gateway_requests_total" in response.text
    assert httpx.get(f"{url}{path}", timeout=5).status_code == 404, "not on the API port"


def test_every_configmap_setting_is_one_the_gateway_reads(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The gateway ignores unknown GATEWAY_* variables, so a misspelled key would be lost."""
    from gateway.config import Settings

    config = next(
        o for o in rendered["gpu"] if o["metadata"]["name"].startswith("gateway-config-")
    )["data"]
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(set(config) - fields)
    assert not unknown, f"gateway-config keys the gateway does not read: {unknown}"
