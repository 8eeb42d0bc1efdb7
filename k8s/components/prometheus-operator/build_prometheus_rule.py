"""Build prometheus-rules.yaml (PrometheusRule objects) from monitoring/rules/*.yml.

The rule files in monitoring/ are the single source: Prometheus loads them as they are
in the local stack, and the Prometheus Operator needs the same groups wrapped in a
PrometheusRule. kustomize cannot reshape a file into an object's field, so this script
does, and tests/k8s/test_monitoring.py fails when the committed output is stale.
Run it with `make k8s-rules`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
RULES_DIR = REPO_ROOT / "monitoring" / "rules"
OUTPUT = HERE / "prometheus-rules.yaml"
HEADER = (
    "# Generated from monitoring/rules/*.yml by build_prometheus_rule.py (make k8s-rules).\n"
    "# Do not edit: change the rule files and rebuild.\n"
)


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions, runbooks) as literal blocks, not escapes."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def build_prometheus_rules(rules_dir: Path = RULES_DIR) -> str:
    """The PrometheusRule objects, one per rule file, as a multi-document YAML string."""
    documents = []
    for rule_file in sorted(rules_dir.glob("*.yml")):
        groups = yaml.safe_load(rule_file.read_text())["groups"]
        documents.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": f"mnist-serving-{rule_file.stem}",
                    "labels": {"app.kubernetes.io/component": "monitoring"},
                    "annotations": {"mnist-serving/source": f"monitoring/rules/{rule_file.name}"},
                },
                "spec": {"groups": groups},
            }
        )
    body = yaml.dump_all(
        documents, Dumper=_BlockStyleDumper, sort_keys=False, width=4096, allow_unicode=True
    )
    return HEADER + body


def main() -> int:
    """Write prometheus-rules.yaml; print what changed."""
    text = build_prometheus_rules()
    previous = OUTPUT.read_text() if OUTPUT.exists() else ""
    OUTPUT.write_text(text)
    print(f"{OUTPUT.relative_to(REPO_ROOT)}: {'unchanged' if text == previous else 'rebuilt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
