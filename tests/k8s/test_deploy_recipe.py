"""The README's deployment recipe: an overlay of one's own on top of gpu that points the
images at a real registry and gives the model repository an RWX storage class."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.k8s.manifests import (
    K8S_DIR,
    Manifest,
    containers,
    kubectl,
    load_all,
    one,
    pod_template,
    render,
    workloads,
)
from tests.k8s.test_render import validation_errors

REGISTRY = "europe-docker.pkg.dev/acme/mnist"
STORAGE_CLASS = "filestore-rwx"
RECIPE = """\
resources:
  - {gpu}
images:
  - name: registry.example.com/mnist-serving/gateway
    newName: {registry}/gateway
    newTag: 0.1.0
  - name: registry.example.com/mnist-serving/trainer
    newName: {registry}/trainer
    newTag: 0.1.0
  - name: registry.example.com/mnist-serving/rollout
    newName: {registry}/rollout
    newTag: 0.1.0
patches:
  - target:
      kind: PersistentVolumeClaim
      name: model-repository
    patch: |-
      - op: add
        path: /spec/storageClassName
        value: {storage_class}
"""


@pytest.fixture(scope="module")
def my_cluster(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    directory: Path = tmp_path_factory.mktemp("my-cluster")
    gpu = os.path.relpath(K8S_DIR / "overlays" / "gpu", directory)
    (directory / "kustomization.yaml").write_text(
        RECIPE.format(gpu=gpu, registry=REGISTRY, storage_class=STORAGE_CLASS)
    )
    return load_all(render(directory))


def test_recipe_points_every_own_image_at_the_registry(my_cluster: list[Manifest]) -> None:
    images = {
        container["image"]
        for workload in workloads(my_cluster)
        for container in containers(pod_template(workload)["spec"])
    }
    assert not any("registry.example.com" in image for image in images), images
    assert {f"{REGISTRY}/{name}:0.1.0" for name in ("gateway", "trainer", "rollout")} <= images
    assert "tensorflow/serving:2.21.0-gpu" in images


def test_recipe_sets_the_claims_storage_class(my_cluster: list[Manifest]) -> None:
    claim = one(my_cluster, "PersistentVolumeClaim", "model-repository")
    assert claim["spec"]["storageClassName"] == STORAGE_CLASS
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_recipe_output_is_still_valid(my_cluster: list[Manifest]) -> None:
    errors = [message for obj in my_cluster if (message := validation_errors(obj))]
    assert not errors, "\n".join(errors)
