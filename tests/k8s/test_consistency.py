"""The objects agree with each other and with the rest of the repository: selectors
select, ports line up, the trainer and TF Serving share the model repository, scrape
targets exist, and only the gpu overlay asks for GPUs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.k8s.manifests import (
    K8S_DIR,
    REPO_ROOT,
    Manifest,
    containers,
    find,
    kind_name,
    one,
    pod_template,
    selects,
    workloads,
)

SERVING_CONFIG = REPO_ROOT / "serving" / "config"
MODEL_REPOSITORY_MOUNT = "/models"
GPU = "nvidia.com/gpu"


def pods_selected(objects: list[Manifest], selector: dict[str, str]) -> list[Manifest]:
    """Pod templates (of any workload) whose labels match `selector`."""
    return [
        pod_template(workload)
        for workload in workloads(objects)
        if selects(selector, pod_template(workload)["metadata"].get("labels", {}))
    ]


def container_ports(pod: Manifest) -> dict[str | int, int]:
    """containerPort by name and by number, over every container of a pod template."""
    ports: dict[str | int, int] = {}
    for container in containers(pod["spec"]):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def service_target(objects: list[Manifest], service_name: str, port: int) -> tuple[Manifest, int]:
    """(Service, containerPort) that traffic to service_name:port reaches; assert it does."""
    service = one(objects, "Service", service_name)
    service_port = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
    assert service_port, f"Service {service_name} has no port {port}"
    pods = pods_selected(objects, service["spec"]["selector"])
    assert pods, f"Service {service_name} selects no pods"
    target = service_port.get("targetPort", port)
    resolved = {container_ports(pod).get(target) for pod in pods}
    assert None not in resolved, f"Service {service_name} port {port}: no containerPort {target}"
    assert len(resolved) == 1
    return service, resolved.pop()


def container_env(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
    """A container's plain env values, including those from ConfigMaps via envFrom."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = next(
                o
                for o in find(objects, "ConfigMap")
                if o["metadata"]["name"] == source["configMapRef"]["name"]
            )
            env.update(config_map["data"])
    env.update({var["name"]: var["value"] for var in container.get("env", []) if "value" in var})
    return env


def workload_container(objects: list[Manifest], kind: str, name: str) -> Manifest:
    return pod_template(one(objects, kind, name))["spec"]["containers"][0]


# --- selectors and ports ----------------------------------------------------------------------


def test_every_service_selects_pods_and_reaches_a_container_port(objects: list[Manifest]) -> None:
    for service in find(objects, "Service"):
        for port in service["spec"]["ports"]:
            service_target(objects, service["metadata"]["name"], port["port"])


def test_every_pod_disruption_budget_covers_pods(objects: list[Manifest]) -> None:
    for budget in find(objects, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert pods_selected(objects, selector), f"{kind_name(budget)} selects no pods"


def test_autoscaler_targets_the_gateway_and_keeps_two_replicas(objects: list[Manifest]) -> None:
    autoscaler = one(objects, "HorizontalPodAutoscaler", "gateway")
    target = autoscaler["spec"]["scaleTargetRef"]
    deployment = one(objects, target["kind"], target["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert deployment["spec"]["replicas"] >= 2
    # Utilization targets are a fraction of requests: without a CPU request the HPA is blind.
    container = pod_template(deployment)["spec"]["containers"][0]
    assert "cpu" in container["resources"]["requests"]


def test_network_policies_select_real_pods_and_ports(objects: list[Manifest]) -> None:
    for policy in find(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        pods = pods_selected(objects, selector)
        assert pods, f"{kind_name(policy)} applies to no pods"
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert all(port["port"] in container_ports(pod) for pod in pods), (
                    f"{kind_name(policy)} opens port {port['port']} that its pods do not expose"
                )
            for peer in rule.get("from", []):
                if "namespaceSelector" not in peer:  # same-namespace peers must exist here
                    peer_labels = peer["podSelector"]["matchLabels"]
                    assert pods_selected(objects, peer_labels), (
                        f"{kind_name(policy)} admits {peer_labels}, which matches no pods"
                    )


def ingress_sources(objects: list[Manifest], app: str, port: int) -> list[dict]:
    """The `from` peers that NetworkPolicies open to `port` of the pods named `app`."""
    peers = []
    for policy in find(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/name") != app:
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p["port"] == port for p in rule.get("ports", [])):
                peers.extend(rule.get("from", [{"everyone": True}]))
    return peers


@pytest.mark.parametrize(("app", "port"), [("tf-serving", 8500), ("redis", 6379)])
def test_only_the_gateway_and_the_rollout_controller_reach(
    objects: list[Manifest], app: str, port: int
) -> None:
    """TF Serving's gRPC port (predictions; config reloads) and Redis (feedback ids;
    rollout records): the gateway and the controller, nothing else."""
    assert one(objects, "NetworkPolicy", "default-deny-ingress")["spec"]["podSelector"] == {}
    peers = ingress_sources(objects, app, port)
    assert peers == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}
        for name in ("gateway", "rollout-controller")
    ]


@pytest.mark.parametrize(
    ("app", "port"), [("tf-serving", 8501), ("pushgateway", 9091), ("rollout-controller", 9102)]
)
def test_only_prometheus_reaches_metrics_ports(
    objects: list[Manifest], app: str, port: int
) -> None:
    peers = ingress_sources(objects, app, port)
    assert peers, f"nothing may scrape {app}:{port}"
    for peer in peers:
        labels = peer["podSelector"]["matchLabels"]
        # The trainer pushes to the Pushgateway; everything else must be Prometheus.
        assert labels["app.kubernetes.io/name"] in {"prometheus", "trainer"}, peer


# --- gateway -> TF Serving -----------------------------------------------------------------------


def test_gateway_serving_target_is_the_headless_grpc_service(objects: list[Manifest]) -> None:
    gateway = workload_container(objects, "Deployment", "gateway")
    target = container_env(gateway, objects)["GATEWAY_SERVING_TARGET"]
    match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
    assert match, f"GATEWAY_SERVING_TARGET {target!r} is not dns:///<service>:<port>"
    service, container_port = service_target(objects, match[1], int(match[2]))
    assert service["spec"].get("clusterIP") == "None", (
        "client-side load balancing needs a headless Service (one DNS record per pod)"
    )
    tf_serving = workload_container(objects, "Deployment", "tf-serving")
    grpc = next(p for p in tf_serving["ports"] if p["name"] == "grpc")
    assert container_port == grpc["containerPort"] == 8500


def test_gateway_listens_where_its_service_and_probes_point(objects: list[Manifest]) -> None:
    gateway = workload_container(objects, "Deployment", "gateway")
    env = container_env(gateway, objects)
    _, container_port = service_target(objects, "gateway", 8080)
    assert int(env["GATEWAY_PORT"]) == container_port
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert (
            container_ports(pod_template(one(objects, "Deployment", "gateway")))[
                gateway[probe]["httpGet"]["port"]
            ]
            == container_port
        )


def test_gateway_secrets_come_from_a_secret_reference(objects: list[Manifest]) -> None:
    gateway = workload_container(objects, "Deployment", "gateway")
    by_name = {var["name"]: var for var in gateway["env"]}
    for name in ("GATEWAY_API_KEYS", "GATEWAY_FEEDBACK_SECRET"):
        assert "value" not in by_name[name], f"{name} must not carry a value in the manifest"
        assert by_name[name]["valueFrom"]["secretKeyRef"]["name"] == "gateway-secrets"
    config = container_env(gateway, objects)
    assert not {"GATEWAY_API_KEYS", "GATEWAY_FEEDBACK_SECRET"} & config.keys()


# --- model repository -------------------------------------------------------------------------


def repository_mounts(objects: list[Manifest]) -> dict[str, tuple[str, str]]:
    """(claim, mountPath) of the model repository per workload that mounts a claim."""
    mounts = {}
    for workload in workloads(objects):
        spec = pod_template(workload)["spec"]
        claims = {
            volume["name"]: volume["persistentVolumeClaim"]["claimName"]
            for volume in spec.get("volumes", [])
            if "persistentVolumeClaim" in volume
        }
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] in claims:
                    mounts[kind_name(workload)] = (claims[mount["name"]], mount["mountPath"])
    return mounts


def test_trainer_and_tf_serving_mount_the_same_claim_at_the_same_path(
    objects: list[Manifest],
) -> None:
    mounts = repository_mounts(objects)
    expected = ("model-repository", MODEL_REPOSITORY_MOUNT)
    for workload in ("Deployment/tf-serving", "Job/trainer-initial", "CronJob/trainer-retrain"):
        assert mounts.get(workload) == expected, f"{workload} mounts {mounts.get(workload)}"
    claim = one(objects, "PersistentVolumeClaim", "model-repository")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("kind", "name"), [("Job", "trainer-initial"), ("CronJob", "trainer-retrain")]
)
def test_trainer_exports_to_the_mount_with_the_quality_gate_and_pushes_metrics(
    objects: list[Manifest], kind: str, name: str
) -> None:
    trainer = workload_container(objects, kind, name)
    args = trainer["args"]
    assert args[0] == "train"
    assert f"--model-repository={MODEL_REPOSITORY_MOUNT}" in args
    assert any(arg.startswith("--min-accuracy=") for arg in args), "quality gate is off"
    assert any(arg.startswith("--max-regression=") for arg in args), "regression gate is off"
    env = container_env(trainer, objects)
    assert env["MODEL_REPOSITORY"] == MODEL_REPOSITORY_MOUNT
    pushgateway = urlsplit(env["PUSHGATEWAY_URL"])
    service_target(objects, pushgateway.hostname, pushgateway.port)


# --- TF Serving configuration -----------------------------------------------------------------


# The model config's ConfigMap: owned by the rollout controller, never rendered.
MODELS_CONFIGMAP = "tf-serving-models"
MODELS_KEY = "models.config"


def tf_serving_config(objects: list[Manifest]) -> dict[str, str]:
    return one(objects, "ConfigMap", "tf-serving-config")["data"]


def models_seed(objects: list[Manifest]) -> Manifest:
    """The generated seed of the controller's model config."""
    return one(objects, "ConfigMap", f"{MODELS_CONFIGMAP}-seed")


@pytest.mark.parametrize("name", ["tf-serving-config", f"{MODELS_CONFIGMAP}-seed"])
def test_tf_serving_config_is_generated_from_serving_config(
    objects: list[Manifest], name: str
) -> None:
    """One source of truth: the ConfigMaps hold serving/config/'s files byte for byte."""
    data = one(objects, "ConfigMap", name)["data"]
    assert data, f"{name} is empty"
    for key, value in data.items():
        assert value == (SERVING_CONFIG / key).read_text(), f"{key} differs from serving/config"


def tf_serving_mounts(objects: list[Manifest]) -> dict[str, str]:
    """mountPath -> ConfigMap name (or claim) of the TF Serving container."""
    pod = pod_template(one(objects, "Deployment", "tf-serving"))["spec"]
    sources = {}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            sources[volume["name"]] = volume["configMap"]["name"]
        elif "persistentVolumeClaim" in volume:
            sources[volume["name"]] = "pvc:" + volume["persistentVolumeClaim"]["claimName"]
    return {
        m["mountPath"]: sources.get(m["name"], "") for m in pod["containers"][0]["volumeMounts"]
    }


def server_flags(objects: list[Manifest]) -> dict[str, str]:
    """The flags TF Serving starts with: the args file, as the container's command reads it."""
    lines = tf_serving_config(objects)["tensorflow_model_server.args"].splitlines()
    flags = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.removeprefix("--").partition("=")
        flags[name] = value
    return flags


def test_tf_serving_flags_point_at_mounted_files_and_exposed_ports(objects: list[Manifest]) -> None:
    flags = server_flags(objects)
    mounts = tf_serving_mounts(objects)
    config_map = one(objects, "ConfigMap", "tf-serving-config")["metadata"]["name"]
    for name, value in flags.items():
        if name.endswith("_file") and name != "model_config_file":
            directory, _, key = value.rpartition("/")
            assert mounts.get(directory) == config_map, f"--{name}={value} is not mounted"
            assert key in tf_serving_config(objects), f"--{name}: no {key} in the ConfigMap"
    # The model config is the controller's ConfigMap, under the seed's key.
    directory, _, key = flags["model_config_file"].rpartition("/")
    assert mounts.get(directory) == MODELS_CONFIGMAP
    assert key == MODELS_KEY and key in models_seed(objects)["data"]
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0, "edits would never apply"
    pod = pod_template(one(objects, "Deployment", "tf-serving"))
    ports = container_ports(pod)
    assert ports["grpc"] == int(flags.get("port", 8500))
    assert ports["http"] == int(flags["rest_api_port"])


def served_models(objects: list[Manifest]) -> dict[str, str]:
    """name -> base_path of every model in models.config (TF Serving's text format)."""
    text = models_seed(objects)["data"][MODELS_KEY]
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    models = {}
    # Each `config {` entry starts a model; its name and base_path come before the next.
    for config in re.split(r"\bconfig\s*\{", text)[1:]:
        name = re.search(r'name:\s*"([^"]+)"', config)
        base_path = re.search(r'base_path:\s*"([^"]+)"', config)
        assert name and base_path, f"cannot read a model entry in models.config: {config!r}"
        models[name[1]] = base_path[1]
    return models


def test_every_served_model_lives_on_the_model_repository(objects: list[Manifest]) -> None:
    models = served_models(objects)
    assert models, "models.config configures no model"
    assert tf_serving_mounts(objects)[MODEL_REPOSITORY_MOUNT] == "pvc:model-repository"
    for name, base_path in models.items():
        assert base_path == f"{MODEL_REPOSITORY_MOUNT}/{name}", (name, base_path)


def test_readiness_waits_for_every_served_model(objects: list[Manifest]) -> None:
    container = workload_container(objects, "Deployment", "tf-serving")
    ready_models = container_env(container, objects)["READY_MODELS"].split()
    assert sorted(ready_models) == sorted(served_models(objects))
    for probe in ("readinessProbe", "startupProbe"):
        script = container[probe]["exec"]["command"][-1]
        directory, _, key = script.rpartition("/")
        probe_map = one(objects, "ConfigMap", "tf-serving-probe")
        assert tf_serving_mounts(objects)[directory] == probe_map["metadata"]["name"]
        assert probe_map["data"][key] == (K8S_DIR / "base" / "files" / key).read_text()


# --- scraping ---------------------------------------------------------------------------------


def test_every_scrape_annotation_names_an_exposed_port(objects: list[Manifest]) -> None:
    annotated = 0
    for workload in workloads(objects):
        pod = pod_template(workload)
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        annotated += 1
        port = int(annotations["prometheus.io/port"])
        assert port in container_ports(pod), f"{kind_name(workload)} scrapes unexposed {port}"
        assert annotations["prometheus.io/path"].startswith("/")
    assert annotated >= 3  # gateway, TF Serving, Pushgateway


def test_tf_serving_scrape_path_is_the_one_monitoring_config_enables(
    objects: list[Manifest],
) -> None:
    monitoring = tf_serving_config(objects)["monitoring.config"]
    path = re.search(r'path:\s*"([^"]+)"', monitoring)
    assert path, "monitoring.config enables no Prometheus path"
    pod = pod_template(one(objects, "Deployment", "tf-serving"))
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == path[1]


# --- GPU --------------------------------------------------------------------------------------


def test_only_the_gpu_overlay_requests_gpus(
    rendered: dict[str, list[Manifest]], rendered_text
) -> None:
    gpu_pod = pod_template(one(rendered["gpu"], "Deployment", "tf-serving"))["spec"]
    container = gpu_pod["containers"][0]
    assert int(container["resources"]["limits"][GPU]) >= 1
    assert container["image"].startswith("tensorflow/serving:")
    assert container["image"].endswith("-gpu")
    assert gpu_pod["nodeSelector"], "GPU pods need a GPU nodeSelector"
    assert any(t["key"] == GPU for t in gpu_pod["tolerations"])

    cpu_pod = pod_template(one(rendered["cpu"], "Deployment", "tf-serving"))["spec"]
    assert GPU not in rendered_text["cpu"], "the cpu overlay mentions GPUs"
    assert not cpu_pod["containers"][0]["image"].endswith("-gpu")
    assert "nodeSelector" not in cpu_pod and "tolerations" not in cpu_pod
