"""Distributed training in Kubernetes (k8s/components/distributed-training), offline.

Two optional components: a Kubeflow TFJob, checked against the TFJob CRD schema of the
operator release it names (vendored in `tfjob/crd/`), and a plain Indexed Job with a
headless Service, checked against Kubernetes' own schemas. For both: the pods meet the
security baseline, the workers can reach each other (ports, NetworkPolicy), the
TF_CONFIG the trainer builds from the Indexed Job's env names real pod DNS names, and the
trainer CLI accepts both command lines.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.k8s.manifests import (
    K8S_DIR,
    NAMESPACE,
    Manifest,
    kind_name,
    kubectl,
    load_all,
    one,
    pod_template,
    render,
    selects,
)
from tests.k8s.test_policy import container_problems
from tests.k8s.test_render import validation_errors
from tests.k8s.test_trainer_job import run_manifest_command
from trainer.distributed import read_cluster

COMPONENTS = K8S_DIR / "components" / "distributed-training"
CRD = COMPONENTS / "tfjob" / "crd" / "kubeflow.org_tfjobs.yaml"
GRPC_PORT = 2222
DISTRIBUTED_LABELS = {
    "app.kubernetes.io/name": "trainer",
    "app.kubernetes.io/component": "distributed-trainer",
}


@pytest.fixture(scope="module")
def indexed() -> list[Manifest]:
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize components)")
    return load_all(render(COMPONENTS / "indexed-job"))


@pytest.fixture(scope="module")
def tfjob_objects() -> list[Manifest]:
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize components)")
    return load_all(render(COMPONENTS / "tfjob"))


@pytest.fixture(scope="module")
def tfjob(tfjob_objects: list[Manifest]) -> Manifest:
    return one(tfjob_objects, "TFJob", "trainer-distributed")


def tfjob_schema() -> dict[str, Any]:
    """The v1 openAPIV3Schema of the vendored CRD, made strict as `kubectl --validate=strict`
    is: an object with declared properties takes no others, except where the CRD keeps
    unknown fields (x-kubernetes-preserve-unknown-fields)."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema)
    # metadata is validated by the API server's ObjectMeta, not the CRD: any keys.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def tfjob_errors(obj: Manifest) -> list[str]:
    validator = jsonschema.Draft7Validator(tfjob_schema())
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


def worker_pod(tfjob: Manifest) -> Manifest:
    return tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]


def as_job(template: Manifest, name: str) -> Manifest:
    """A pod template wrapped in a Job, for the checks written for workloads."""
    return {"kind": "Job", "metadata": {"name": name}, "spec": {"template": template}}


# --- rendering and schemas ----------------------------------------------------------------------


def test_components_render_their_own_objects_in_the_stack_namespace(indexed, tfjob_objects):
    assert sorted(kind_name(obj) for obj in indexed) == [
        "Job/trainer-distributed",
        "NetworkPolicy/distributed-trainer-ingress",
        "Service/trainer-workers",
    ]
    assert sorted(kind_name(obj) for obj in tfjob_objects) == [
        "NetworkPolicy/distributed-trainer-ingress",
        "TFJob/trainer-distributed",
    ]
    assert all(obj["metadata"]["namespace"] == NAMESPACE for obj in [*indexed, *tfjob_objects])


def test_indexed_job_objects_are_valid_for_the_pinned_kubernetes_version(indexed) -> None:
    errors = [message for obj in indexed if (message := validation_errors(obj))]
    assert not errors, "\n".join(errors)


def test_the_crd_is_the_operators_tfjob_definition() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "tfjobs.kubeflow.org"
    assert crd["spec"]["names"]["kind"] == "TFJob"
    assert "v1.9.0" in (CRD.parent / "README.md").read_text()


def test_tfjob_is_valid_against_the_operators_crd(tfjob: Manifest) -> None:
    assert tfjob["apiVersion"] == "kubeflow.org/v1"
    assert not tfjob_errors(tfjob)
    # Its pod template is a real pod template too: Kubernetes' own schema, strict.
    job = {"apiVersion": "batch/v1", **as_job(worker_pod(tfjob), "tfjob-worker")}
    assert validation_errors(job) is None


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (lambda t: t["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="two"), "wrong type"),
        (lambda t: t["spec"]["runPolicy"].update(cleanupPolicy="All"), "misspelled field"),
        (
            lambda t: worker_pod(t)["spec"]["containers"][0].update(imagePullPolcy="Always"),
            "misspelled field in the pod template",
        ),
        (lambda t: worker_pod(t)["spec"]["containers"][0].pop("name"), "missing required field"),
    ],
)
def test_crd_validation_rejects_broken_tfjobs(tfjob: Manifest, mutation, why) -> None:
    broken = copy.deepcopy(tfjob)
    mutation(broken)
    assert tfjob_errors(broken), f"a {why} passed validation"


def test_every_pod_meets_the_security_baseline(indexed, tfjob) -> None:
    problems = container_problems(one(indexed, "Job", "trainer-distributed"))
    problems += container_problems(as_job(worker_pod(tfjob), "tfjob-worker"))
    assert not problems, "\n".join(problems)


# --- the cluster the workers form ---------------------------------------------------------------


def container(template: Manifest) -> Manifest:
    return template["spec"]["containers"][0]


def test_indexed_job_workers_find_each_other_through_the_headless_service(indexed) -> None:
    job = one(indexed, "Job", "trainer-distributed")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    template = pod_template(job)
    service = one(indexed, "Service", template["spec"]["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"].get("publishNotReadyAddresses") is True
    assert selects(service["spec"]["selector"], template["metadata"]["labels"])
    env = {var["name"]: var["value"] for var in container(template)["env"] if "value" in var}
    ports = {port["containerPort"] for port in container(template)["ports"]}
    chiefs = 0
    for index in range(spec["completions"]):
        cluster = read_cluster(env | {"JOB_COMPLETION_INDEX": str(index)})
        assert cluster.num_workers == spec["completions"]
        assert cluster.task_index == index
        chiefs += cluster.is_chief
        for position, address in enumerate(cluster.spec["worker"]):
            host, port = address.rsplit(":", 1)
            # <job name>-<index>.<subdomain>: the DNS name Kubernetes gives the pod.
            assert host == f"{job['metadata']['name']}-{position}.{service['metadata']['name']}"
            assert int(port) in ports
            assert int(port) in {p["targetPort"] for p in service["spec"]["ports"]}
    assert chiefs == 1


@pytest.mark.parametrize("component", ["indexed", "tfjob"])
def test_workers_are_let_in_on_the_grpc_port(request, component: str) -> None:
    objects = request.getfixturevalue("indexed" if component == "indexed" else "tfjob_objects")
    policy = one(objects, "NetworkPolicy", "distributed-trainer-ingress")
    if component == "indexed":
        template = pod_template(one(objects, "Job", "trainer-distributed"))
    else:
        template = worker_pod(one(objects, "TFJob", "trainer-distributed"))
    labels = template["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    (rule,) = policy["spec"]["ingress"]
    assert all(selects(peer["podSelector"]["matchLabels"], labels) for peer in rule["from"])
    ports = {port["containerPort"] for port in container(template)["ports"]}
    assert {port["port"] for port in rule["ports"]} == {GRPC_PORT} <= ports
    # The chief pushes its metrics: the Pushgateway's policy lets trainer pods in.
    assert selects({"app.kubernetes.io/name": "trainer"}, labels)


@pytest.mark.parametrize(("component", "kind"), [("indexed-job", "Job"), ("tfjob", "TFJob")])
def test_in_an_overlay_a_component_adds_to_the_stack_and_changes_nothing(
    component: str, kind: str, tmp_path: Path
) -> None:
    if kubectl() is None:
        pytest.skip("kubectl is not installed")
    stack = load_all(render(K8S_DIR / "overlays" / "gpu"))
    overlay = os.path.relpath(K8S_DIR / "overlays" / "gpu", tmp_path)
    added = os.path.relpath(COMPONENTS / component, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n  - {overlay}\ncomponents:\n  - {added}\n"
    )
    combined = load_all(render(tmp_path))
    by_name = {kind_name(obj): obj for obj in combined}
    assert [kind_name(obj) for obj in stack if by_name.get(kind_name(obj)) != obj] == []
    workload = one(combined, kind, "trainer-distributed")
    template = pod_template(workload) if kind == "Job" else worker_pod(workload)
    # The chief exports where TF Serving reads: the stack's claim, mounted at /models.
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in template["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    mounts = {m["mountPath"]: m["name"] for m in container(template)["volumeMounts"]}
    assert claims[mounts["/models"]] == "model-repository"
    assert one(combined, "PersistentVolumeClaim", "model-repository")


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["indexed", "tfjob"])
def test_trainer_cli_accepts_the_manifest_command_line(request, component, tmp_path) -> None:
    if component == "indexed":
        job = one(request.getfixturevalue("indexed"), "Job", "trainer-distributed")
        template = pod_template(job)
    else:
        template = worker_pod(request.getfixturevalue("tfjob"))
    args = container(template)["args"]
    assert args[:2] == ["train", "--distributed"]
    assert any(arg.startswith("--min-accuracy=") for arg in args), "quality gate is off"
    assert "--model-repository=/models" in args
    run_manifest_command(container(template), tmp_path)


def test_the_tfjob_component_names_the_operator_as_its_prerequisite() -> None:
    text = (COMPONENTS / "tfjob" / "kustomization.yaml").read_text()
    assert "PREREQUISITE" in text and "training-operator" in text and "v1.9.0" in text
    assert "Apache License" in (CRD.parent / "LICENSE").read_text()
