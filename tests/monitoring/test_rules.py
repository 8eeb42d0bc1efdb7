"""The monitoring config, rules and dashboard, checked by promtool and by reading them.

promtool validates the config and rule syntax and runs the rule unit tests in
monitoring/tests/ (every alert firing and quiet, the recording rules' arithmetic). The
remaining tests hold the conventions the issue sets: a severity and a runbook on every
alert, both outcomes tested for every alert, the job names Kubernetes reuses, and a
dashboard that reads only series the rules record or the services export.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.monitoring import (
    MONITORING_DIR,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    render_prometheus_config,
    require_binary,
)

RULE_TESTS_DIR = MONITORING_DIR / "tests"
DASHBOARDS_DIR = MONITORING_DIR / "grafana" / "dashboards"
SEVERITIES = {"critical", "warning"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("PROMTOOL_BIN", "promtool")


def run_promtool(promtool: str, *args: str, cwd: Path = MONITORING_DIR) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def load_rules() -> list[dict]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def alert_rules() -> list[dict]:
    return [rule for rule in load_rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in load_rules() if "record" in rule}


def test_promtool_accepts_the_local_stack_config(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", PROMETHEUS_CONFIG.name)
    # The config's rule_files glob must actually reach the rule files.
    assert "rules found" in output


def test_promtool_accepts_the_rule_files(promtool: str) -> None:
    files = sorted(str(path) for path in RULES_DIR.glob("*.yml"))
    assert files, f"no rule files in {RULES_DIR}"
    run_promtool(promtool, "check", "rules", *files)


def test_rule_unit_tests_pass(promtool: str) -> None:
    files = sorted(path.name for path in RULE_TESTS_DIR.glob("*.yml"))
    assert files, f"no promtool tests in {RULE_TESTS_DIR}"
    output = run_promtool(promtool, "test", "rules", *files, cwd=RULE_TESTS_DIR)
    assert "FAILED" not in output


def test_the_config_rendered_for_tests_is_valid(promtool: str, tmp_path: Path) -> None:
    config = render_prometheus_config({"gateway": "127.0.0.1:1", "pushgateway": "127.0.0.1:2"})
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    run_promtool(promtool, "check", "config", str(path), cwd=tmp_path)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "pushgateway"}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["global"]["evaluation_interval"] == "1s"


def test_render_rejects_a_job_the_config_does_not_have() -> None:
    with pytest.raises(ValueError, match="no job"):
        render_prometheus_config({"tf-serving": "127.0.0.1:1"})


def test_scrape_jobs_keep_the_names_and_paths_kubernetes_reuses() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "model-server", "pushgateway", "rollout"}
    assert jobs["gateway"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["model-server"]["metrics_path"] == "/monitoring/prometheus/metrics"
    # Without honor_labels the trainer's job="trainer" would become job="pushgateway".
    assert jobs["pushgateway"]["honor_labels"] is True
    for job in jobs.values():
        for static in job["static_configs"]:
            assert all(target.startswith("127.0.0.1:") for target in static["targets"])


def test_every_alert_has_a_severity_summary_and_runbook() -> None:
    alerts = alert_rules()
    assert alerts
    for rule in alerts:
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), rule["alert"]
        # The runbook says what to check first, not just that something is wrong.
        assert annotations.get("runbook", "").startswith("Check first"), rule["alert"]
        assert rule.get("for"), f"{rule['alert']} would fire on a single evaluation"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_issue_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "GatewayHighErrorRatio",
        "GatewayP99LatencyOverSLO",
        "ModelServerDown",
        "ModelServerNoAvailableVersion",
        "OnlineAccuracyBelowOffline",
        "CanaryAccuracyWorseThanStable",
        "CanaryLatencyWorseThanStable",
    } <= names


def test_recording_rules_cover_latency_quantiles_for_gateway_and_model_server() -> None:
    names = recorded_names()
    for quantile in ("p50", "p95", "p99"):
        assert f"route:gateway_request_duration_seconds:{quantile}_rate5m" in names
        assert f"model_version:gateway_upstream_duration_seconds:{quantile}_rate5m" in names
        assert f"model_name_api:tf_serving_request_latency_seconds:{quantile}_rate5m" in names
    assert "model_version:gateway_online_accuracy:ratio_rate5m" in names
    assert "model_version_class:gateway_predictions:ratio_rate5m" in names


# Colon-bearing names in an expression are recorded series (level:metric:ops) unless they
# are TF Serving's own, which start with a colon.
RECORDED_NAME = re.compile(r"(?<![:\w])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)")


def load_dashboards() -> list[tuple[Path, dict]]:
    paths = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert paths, f"no dashboards in {DASHBOARDS_DIR}"
    return [(path, json.loads(path.read_text())) for path in paths]


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_reads_only_recorded_series_that_exist() -> None:
    names = recorded_names()
    for path, dashboard in load_dashboards():
        exprs = dashboard_exprs(dashboard)
        assert exprs, f"{path.name} has no queries"
        for title, expr in exprs:
            for name in RECORDED_NAME.findall(expr):
                assert name in names, f"{path.name} panel {title!r} reads unrecorded {name}"


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    for _, dashboard in load_dashboards():
        titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
        exprs = " ".join(expr for _, expr in dashboard_exprs(dashboard))
        assert "latency by stage" in titles and "by version" in titles
        assert "requests per second" in titles and "error" in titles
        assert "online accuracy vs offline accuracy" in titles
        assert "gateway_prediction_confidence_bucket" in exprs
        assert "processed_batch_size" in exprs
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        assert dashboard["uid"] and dashboard["title"]


def test_rule_files_rendered_from_templates_are_current() -> None:
    """monitoring/rules/drift.yml is monitoring/templates/drift.yml at production windows."""
    from tests.fixtures.monitoring import load_rule_renderer

    renderer = load_rule_renderer()
    assert renderer.stale() == [], "run `make monitoring-rules`"
    shortened = renderer.render("drift.yml", window="20s", **{"for": "5s"})
    assert "[20s]" in shortened and "for: 5s" in shortened and "30m" not in shortened


def test_drift_alert_and_psi_rule_exist() -> None:
    assert "PredictionDriftHigh" in {rule["alert"] for rule in alert_rules()}
    assert "model_version_statistic:gateway_drift_psi:rate30m" in recorded_names()
