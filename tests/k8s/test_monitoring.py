"""The optional prometheus-operator component: its PrometheusRules are the rule files of
monitoring/ (and not stale), and its ServiceMonitors scrape the jobs of
monitoring/prometheus.yml from Services that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.manifests import (
    K8S_DIR,
    NAMESPACE,
    REPO_ROOT,
    Manifest,
    find,
    kind_name,
    kubectl,
    load_all,
    one,
    render,
    selects,
)

COMPONENT = K8S_DIR / "components" / "prometheus-operator"
MONITORING = REPO_ROOT / "monitoring"


def load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_prometheus_rule", COMPONENT / "build_prometheus_rule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def with_operator(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """The gpu overlay with the component enabled, as a deployer would add it."""
    if kubectl() is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays)")
    directory = tmp_path_factory.mktemp("operator-overlay")
    overlay = os.path.relpath(K8S_DIR / "overlays" / "gpu", directory)
    component = os.path.relpath(COMPONENT, directory)
    (directory / "kustomization.yaml").write_text(
        f"resources:\n  - {overlay}\ncomponents:\n  - {component}\n"
    )
    return load_all(render(directory))


def scrape_jobs() -> dict[str, dict]:
    """monitoring/prometheus.yml's scrape configs by job name."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_committed_prometheus_rules_are_built_from_monitoring_rules() -> None:
    builder = load_builder()
    committed = (COMPONENT / "prometheus-rules.yaml").read_text()
    assert committed == builder.build_prometheus_rules(), (
        "prometheus-rules.yaml is stale: run `make k8s-rules`"
    )


def test_prometheus_rules_hold_every_group_of_every_rule_file(
    with_operator: list[Manifest],
) -> None:
    for rule_file in sorted((MONITORING / "rules").glob("*.yml")):
        rule = one(with_operator, "PrometheusRule", f"mnist-serving-{rule_file.stem}")
        assert rule["metadata"]["namespace"] == NAMESPACE
        assert rule["spec"]["groups"] == yaml.safe_load(rule_file.read_text())["groups"]


def test_promtool_accepts_the_rules(with_operator: list[Manifest], tmp_path: Path) -> None:
    promtool = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (make monitoring-bins)")
    for rule in find(with_operator, "PrometheusRule"):
        path = tmp_path / f"{rule['metadata']['name']}.yml"
        path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_service_monitors_scrape_the_jobs_of_prometheus_yml(with_operator: list[Manifest]) -> None:
    jobs = scrape_jobs()
    monitored = {}
    for monitor in find(with_operator, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s for s in find(with_operator, "Service") if selects(selector, s["metadata"]["labels"])
        ]
        assert len(services) == 1, f"{kind_name(monitor)} selects {len(services)} Services"
        service = services[0]
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        port_names = {port.get("name") for port in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, f"{kind_name(monitor)}: no port {endpoint}"
            assert endpoint["path"] == jobs[job].get("metrics_path", "/metrics")
            assert endpoint.get("honorLabels", False) == jobs[job].get("honor_labels", False)
        monitored[job] = service["metadata"]["name"]
    assert set(monitored) == set(jobs), f"monitored {monitored}, prometheus.yml has {set(jobs)}"


def test_every_job_the_rules_name_is_scraped() -> None:
    named = set()
    for rule_file in (MONITORING / "rules").glob("*.yml"):
        named |= set(re.findall(r'job="([^"]+)"', rule_file.read_text()))
    assert named <= set(scrape_jobs()), f"rules name unscraped jobs: {named - set(scrape_jobs())}"
