"""The server-side queries: the recording rules' own expressions over the run's window."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from loadtests.server_side import (
    PANELS,
    PanelResult,
    ServerSide,
    expression,
    load_rule_expressions,
    rule,
    windowed,
)


def test_every_rule_a_panel_names_exists_in_the_recording_rules():
    rules = load_rule_expressions()

    named = {query.rule for panel in PANELS for query in panel.queries if query.rule}
    assert named and named <= set(rules), sorted(named - set(rules))


def test_the_five_minute_range_becomes_the_run_window():
    rules = load_rule_expressions()
    record = "route:gateway_request_duration_seconds:p99_rate5m"

    query = windowed(rules[record], 42)

    assert "[42s]" in query and "[5m]" not in query
    assert query == rules[record].replace("[5m]", "[42s]")


def test_an_unknown_rule_is_named():
    with pytest.raises(KeyError, match="no recording rule 'nope'"):
        expression(rule("p99", "nope"), load_rule_expressions(), 60)


def test_promtool_parses_every_query(tmp_path):
    """Each windowed expression is valid PromQL (promtool checks a rule file of them all)."""
    promtool = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (make monitoring-bins)")
    rules = load_rule_expressions()
    queries = [query for panel in PANELS for query in panel.queries]
    records = [
        {"record": f"loadtest:query_{index}", "expr": expression(query, rules, 37)}
        for index, query in enumerate(queries)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "loadtest", "rules": records}]}))

    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout


def test_the_slowest_stage_of_a_predict_is_read_from_predict_routes_only():
    end_to_end, upstream = PANELS[0], PANELS[2]
    server_side = ServerSide("http://prometheus", 0, 60, 60)
    server_side.panels = [
        PanelResult(
            end_to_end,
            [(("/v1/models",), [4, 16, 35.6]), (("/v1/models/{model}/predict",), [4, 9, 15.3])],
        ),
        PanelResult(upstream, [(("mnist", "1"), [2, 6, 11.0]), (("mnist", "2"), [2, 6, 12.5])]),
    ]

    stages = dict(server_side.p99_by_stage())

    assert stages["gateway, end to end (predict routes)"] == 15.3
    assert stages["gateway's call to the model server"] == 12.5  # the worst version
    assert stages["TensorFlow run"] is None  # no panel: nothing recorded
