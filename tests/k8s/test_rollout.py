"""The rollout controller in the overlays (docs/ROLLOUT.md): it owns TF Serving's model
config as the ConfigMap tf-serving-models, which no manifest renders (so an apply never
reverts a promotion) and TF Serving mounts; its RBAC is exactly that ConfigMap and its
Lease; one replica with leader election; its network reach; the fine-tuning CronJob."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.k8s.manifests import (
    REPO_ROOT,
    Manifest,
    containers,
    find,
    kind_name,
    one,
    pod_template,
    workloads,
)
from tests.k8s.test_consistency import (
    MODELS_CONFIGMAP,
    MODELS_KEY,
    container_env,
    container_ports,
    models_seed,
    pods_selected,
    service_target,
)

CONTROLLER = "rollout-controller"
LEASE = "rollout-controller"
MOUNT = "/models"


def controller_pod(objects: list[Manifest]) -> Manifest:
    return pod_template(one(objects, "Deployment", CONTROLLER))


def controller_container(objects: list[Manifest]) -> Manifest:
    (container,) = controller_pod(objects)["spec"]["containers"]
    return container


def plain_env(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
    return container_env(container, objects)


def field_refs(container: Manifest) -> dict[str, str]:
    """Env vars the downward API fills: name -> fieldPath."""
    return {
        var["name"]: var["valueFrom"]["fieldRef"]["fieldPath"]
        for var in container.get("env", [])
        if "fieldRef" in var.get("valueFrom", {})
    }


def volume_sources(pod: Manifest) -> dict[str, Manifest]:
    return {volume["name"]: volume for volume in pod["spec"]["volumes"]}


def mount_of(pod: Manifest, container: Manifest, path: str) -> tuple[Manifest, Manifest]:
    """(volumeMount, volume) of `container` at `path`; assert there is one."""
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == path), None)
    assert mount, f"{container['name']} mounts nothing at {path}"
    return mount, volume_sources(pod)[mount["name"]]


# --- the owned ConfigMap --------------------------------------------------------------------


def test_the_owned_model_config_is_never_rendered(objects: list[Manifest]) -> None:
    """`kubectl apply -k` must never carry tf-serving-models: it would revert the
    controller's promotions (and a generated name would not be the fixed one)."""
    rendered = [
        kind_name(obj)
        for obj in objects
        if obj["metadata"]["name"] == MODELS_CONFIGMAP
        or (
            obj["kind"] == "ConfigMap"
            and obj["metadata"]["name"].rsplit("-", 1)[0] == MODELS_CONFIGMAP
        )
    ]
    assert rendered == [], f"{MODELS_CONFIGMAP} must be created by the controller only"
    seed = models_seed(objects)
    assert seed["metadata"]["name"] != f"{MODELS_CONFIGMAP}-seed", "the seed keeps its hash"
    assert set(seed["data"]) == {MODELS_KEY}


def test_tf_serving_mounts_the_owned_config_and_waits_for_it(objects: list[Manifest]) -> None:
    pod = pod_template(one(objects, "Deployment", "tf-serving"))
    server = pod["spec"]["containers"][0]
    # --model_config_file names this mount (test_consistency reads the args file).
    mount, volume = mount_of(pod, server, "/etc/tfserving-models")
    assert volume["configMap"]["name"] == MODELS_CONFIGMAP
    assert "subPath" not in mount, "a subPath mount never sees the controller's updates"
    assert mount.get("readOnly") is True
    # Optional, so the pod starts before the controller has created it; the init container
    # then holds the server back until the kubelet has filled the volume.
    assert volume["configMap"].get("optional") is True
    (init,) = pod["spec"]["initContainers"]
    _, init_volume = mount_of(pod, init, mount["mountPath"])
    assert init_volume is volume
    assert f"{mount['mountPath']}/{MODELS_KEY}" in " ".join(init["command"] + init["args"])
    assert init["image"] == server["image"], "no second image to pull"


# --- RBAC -------------------------------------------------------------------------------------


def test_controller_rbac_is_exactly_its_configmap_and_lease(objects: list[Manifest]) -> None:
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    roles = find(objects, "Role")
    assert [role["metadata"]["name"] for role in roles] == [CONTROLLER]
    rules = sorted(
        (
            tuple(rule["apiGroups"]),
            tuple(rule["resources"]),
            tuple(rule.get("resourceNames", [])),
            tuple(sorted(rule["verbs"])),
        )
        for rule in roles[0]["rules"]
    )
    assert rules == sorted(
        [
            (("",), ("configmaps",), (MODELS_CONFIGMAP,), ("get", "update")),
            (("coordination.k8s.io",), ("leases",), (LEASE,), ("get", "update")),
            # RBAC cannot name what is created: create only, fenced by the admission policy.
            (("",), ("configmaps",), (), ("create",)),
            (("coordination.k8s.io",), ("leases",), (), ("create",)),
        ]
    )
    (binding,) = find(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": CONTROLLER,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": "mnist-serving"}
    ]
    assert controller_pod(objects)["spec"]["serviceAccountName"] == CONTROLLER


def test_admission_policy_limits_the_controllers_creates_to_its_two_names(
    objects: list[Manifest],
) -> None:
    policy = one(objects, "ValidatingAdmissionPolicy", f"mnist-serving-{CONTROLLER}-creates")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    operations = {
        (rule["apiGroups"][0], rule["resources"][0]): rule["operations"]
        for rule in spec["matchConstraints"]["resourceRules"]
    }
    assert operations == {
        ("", "configmaps"): ["CREATE"],
        ("coordination.k8s.io", "leases"): ["CREATE"],
    }
    (condition,) = spec["matchConditions"]
    assert f':{CONTROLLER}"' in condition["expression"]
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert f'"{MODELS_CONFIGMAP}"' in expressions and f'"{LEASE}"' in expressions
    binding = one(objects, "ValidatingAdmissionPolicyBinding", policy["metadata"]["name"])
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    # The binding selects this stack's namespace by the label kustomize gives it.
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    namespace = one(objects, "Namespace", "mnist-serving")
    assert selector.items() <= namespace["metadata"]["labels"].items()


def test_only_the_controller_gets_an_api_token(objects: list[Manifest]) -> None:
    """Every pod opts out of automounting (test_policy); the controller mounts a projected,
    expiring token where the client looks for it, and nobody else mounts one."""
    for workload in workloads(objects):
        pod = pod_template(workload)
        tokens = [
            source
            for volume in pod["spec"].get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            if "serviceAccountToken" in source
        ]
        if kind_name(workload) != f"Deployment/{CONTROLLER}":
            assert not tokens, f"{kind_name(workload)} mounts an API token"
            continue
        (token,) = tokens
        assert token["serviceAccountToken"]["expirationSeconds"] <= 3600
        mount, _ = mount_of(
            pod, controller_container(objects), "/var/run/secrets/kubernetes.io/serviceaccount"
        )
        assert mount["readOnly"] is True
    accounts = {a["metadata"]["name"]: a for a in find(objects, "ServiceAccount")}
    assert accounts[CONTROLLER]["automountServiceAccountToken"] is False


# --- the controller ---------------------------------------------------------------------------


def test_controller_is_one_replica_with_lease_leader_election(objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 1
    container = controller_container(objects)
    env = plain_env(container, objects)
    assert env["ROLLOUT_LEASE_NAME"] == LEASE
    assert field_refs(container) == {
        "POD_NAME": "metadata.name",
        "ROLLOUT_NAMESPACE": "metadata.namespace",
    }
    assert container["args"] == ["run"]


def test_controller_writes_the_configmap_tf_serving_mounts_and_has_its_seed(
    objects: list[Manifest],
) -> None:
    pod = controller_pod(objects)
    container = controller_container(objects)
    env = plain_env(container, objects)
    assert env["ROLLOUT_CONFIG_STORE"] == "configmap"
    assert env["ROLLOUT_CONFIGMAP_NAME"] == MODELS_CONFIGMAP
    directory, _, key = env["ROLLOUT_CONFIGMAP_SEED"].rpartition("/")
    _, volume = mount_of(pod, container, directory)
    seed = models_seed(objects)
    assert volume["configMap"]["name"] == seed["metadata"]["name"]
    assert key in seed["data"]
    # The model repository, read-only: the controller reads versions, never writes them.
    mount, volume = mount_of(pod, container, MOUNT)
    assert mount["readOnly"] is True
    assert volume["persistentVolumeClaim"] == {"claimName": "model-repository", "readOnly": True}
    assert env["ROLLOUT_MODEL_REPOSITORY"] == MOUNT


def test_controller_reaches_redis_and_every_tf_serving_pod(objects: list[Manifest]) -> None:
    env = plain_env(controller_container(objects), objects)
    redis = urlsplit(env["ROLLOUT_REDIS_URL"])
    assert redis.scheme == "redis"
    service_target(objects, redis.hostname, redis.port)
    gateway = next(w for w in workloads(objects) if kind_name(w) == "Deployment/gateway")
    gateway_env = container_env(pod_template(gateway)["spec"]["containers"][0], objects)
    assert env["ROLLOUT_REDIS_URL"] == gateway_env["GATEWAY_REDIS_URL"], "one rollout record"
    # The headless Service: a reload must reach every replica, not one behind a VIP.
    match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", env["ROLLOUT_SERVING_TARGET"])
    assert match
    service, port = service_target(objects, match[1], int(match[2]))
    assert service["spec"]["clusterIP"] == "None" and port == 8500
    assert env["ROLLOUT_AUDIT_LOG"] == "-"
    assert urlsplit(env["ROLLOUT_PROMETHEUS_URL"]).port == 9090


def test_controller_metrics_port_is_served_probed_and_scraped(objects: list[Manifest]) -> None:
    pod = controller_pod(objects)
    container = controller_container(objects)
    port = int(plain_env(container, objects)["ROLLOUT_METRICS_PORT"])
    assert container_ports(pod)["metrics"] == port
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == port
    _, target = service_target(objects, CONTROLLER, port)
    assert target == port
    service = one(objects, "Service", CONTROLLER)
    assert service["metadata"]["labels"]["scrape-job"] == "rollout"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def egress_rules(objects: list[Manifest]) -> list[Manifest]:
    policies = [
        p
        for p in find(objects, "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": CONTROLLER}
        and "Egress" in p["spec"]["policyTypes"]
    ]
    assert len(policies) == 1, "one egress policy fences the controller"
    return policies[0]["spec"]["egress"]


def test_controller_egress_is_dns_prometheus_redis_tf_serving_and_the_api(
    objects: list[Manifest],
) -> None:
    reach: dict[int, list[Manifest]] = {}
    for rule in egress_rules(objects):
        assert rule.get("to"), "an egress rule without peers opens everything"
        for port in rule["ports"]:
            reach.setdefault(port["port"], []).extend(rule["to"])
    assert set(reach) == {53, 9090, 6379, 8500, 443, 6443}
    for port, app in ((6379, "redis"), (8500, "tf-serving")):
        (peer,) = reach[port]
        assert peer == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": app}}}
        assert pods_selected(objects, peer["podSelector"]["matchLabels"])
    (prometheus,) = reach[9090]
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert all("ipBlock" in peer for peer in reach[443])
    dns = reach[53]
    assert all(p["namespaceSelector"]["matchLabels"] for p in dns)


# --- fine-tuning ------------------------------------------------------------------------------


def finetune(objects: list[Manifest]) -> Manifest:
    return one(objects, "CronJob", "trainer-finetune")


def test_finetune_cronjob_never_overlaps_and_reads_the_prediction_log(
    objects: list[Manifest],
) -> None:
    cronjob = finetune(objects)
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_template(cronjob)
    (container,) = containers(pod["spec"])
    assert container["args"] == [
        "finetune",
        "--from-version=stable",
        "--model-config=/etc/tfserving-models/models.config",
        "--log-dir=/prediction-log",
        f"--model-repository={MOUNT}",
    ]
    assert (
        container["image"]
        == pod_template(one(objects, "CronJob", "trainer-retrain"))["spec"]["containers"][0][
            "image"
        ]
    )
    mount, volume = mount_of(pod, container, MOUNT)
    assert volume["persistentVolumeClaim"]["claimName"] == "model-repository"
    assert not mount.get("readOnly"), "it exports the next version"
    # The same claim the gateways write their log to, at the path the args name.
    mount, volume = mount_of(pod, container, "/prediction-log")
    assert mount["readOnly"] is True
    gateway = pod_template(one(objects, "Deployment", "gateway"))
    _, gateway_volume = mount_of(gateway, gateway["spec"]["containers"][0], "/prediction-log")
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == gateway_volume["persistentVolumeClaim"]["claimName"]
    assert one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    # It starts from the version users are served: the controller's `stable` label.
    mount, volume = mount_of(pod, container, "/etc/tfserving-models")
    assert volume["configMap"]["name"] == "tf-serving-models" and mount["readOnly"] is True


def test_finetune_cli_accepts_the_manifest_command_line(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    """`python -m trainer finetune --help` knows every flag the CronJob passes."""
    container = pod_template(finetune(rendered["gpu"]))["spec"]["containers"][0]
    result = subprocess.run(
        [sys.executable, "-m", "trainer", container["args"][0], "--help"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and "No such command" in result.stderr:
        pytest.skip("`trainer finetune` is not in this checkout yet")
    assert result.returncode == 0, result.stderr
    for arg in container["args"][1:]:
        assert arg.split("=")[0] in result.stdout, f"trainer finetune has no {arg}"


# --- the controller's own settings ---------------------------------------------------------------


def test_every_rollout_setting_is_one_the_controller_reads(objects: list[Manifest]) -> None:
    """Once rollout/config.py exists: pydantic-settings ignores unknown ROLLOUT_* names, so
    a misspelled key in rollout.env would be lost silently."""
    try:
        from rollout.config import Settings
    except ImportError:
        pytest.skip("rollout/config.py is not in this checkout yet")
    container = controller_container(objects)
    names = set(plain_env(container, objects)) | set(field_refs(container))
    fields = {f"ROLLOUT_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(n for n in names if n.startswith("ROLLOUT_") and n not in fields)
    assert not unknown, f"rollout-config keys the controller does not read: {unknown}"
