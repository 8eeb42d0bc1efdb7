"""Both overlays render, and every object is valid for the pinned Kubernetes version."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests.k8s.manifests import K8S_VERSION, NAMESPACE, Manifest, kind_name

# Prometheus Operator objects have no schema in kubernetes-validate (CRDs); their
# structure is checked in test_monitoring.py.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def validation_errors(obj: Manifest) -> str | None:
    """kubernetes-validate's message for `obj`, strict (unknown fields are errors)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{kind_name(obj)}: {error.message} at {list(error.path)}"
    return None


def test_overlay_renders_the_whole_stack(objects: list[Manifest]) -> None:
    kinds = {kind_name(obj) for obj in objects}
    expected = {
        "Namespace/mnist-serving",
        "PersistentVolumeClaim/model-repository",
        "Deployment/tf-serving",
        "Service/tf-serving",
        "Service/tf-serving-headless",
        "Deployment/gateway",
        "Service/gateway",
        "HorizontalPodAutoscaler/gateway",
        "PodDisruptionBudget/gateway",
        "Job/trainer-initial",
        "CronJob/trainer-retrain",
        "Deployment/pushgateway",
        "Service/pushgateway",
        # The issue: both overlays include the controller, its RBAC, fine-tuning and Redis.
        "Deployment/rollout-controller",
        "Service/rollout-controller",
        "ServiceAccount/rollout-controller",
        "Role/rollout-controller",
        "RoleBinding/rollout-controller",
        "CronJob/trainer-finetune",
        "Deployment/redis",
        "Service/redis",
    }
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"


def test_every_namespaced_object_lands_in_the_stack_namespace(objects: list[Manifest]) -> None:
    # kustomize (5.5) also writes a namespace into the admission policy and its binding,
    # which the API server drops: they are cluster-scoped.
    cluster_scoped = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    wrong = [
        kind_name(obj)
        for obj in objects
        if obj["kind"] not in cluster_scoped and obj["metadata"].get("namespace") != NAMESPACE
    ]
    assert not wrong, f"objects outside namespace {NAMESPACE}: {wrong}"


def test_every_object_is_valid_for_the_pinned_kubernetes_version(
    objects: list[Manifest],
) -> None:
    errors = [
        message
        for obj in objects
        if obj["kind"] not in CUSTOM_KINDS and (message := validation_errors(obj))
    ]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(nodeSelectr={}), "misspelled field"),
        (lambda d: d["spec"].update(replicas="two"), "wrong type"),
        (lambda d: d["spec"].pop("selector"), "missing required field"),
    ],
)
def test_schema_validation_rejects_broken_objects(objects: list[Manifest], mutation, why) -> None:
    """The validator is strict enough to catch the mistakes it is there for."""
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    mutation(deployment)
    assert validation_errors(deployment), f"a {why} passed validation"
