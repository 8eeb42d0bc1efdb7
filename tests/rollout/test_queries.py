"""The analysis's PromQL is the recording rules' own, with the policy's window."""

from __future__ import annotations

import re

import pytest

from rollout.analysis import REQUIRED_RECORDS
from rollout.config import DEFAULT_RULES_DIR
from rollout.errors import EvidenceUnavailableError
from rollout.queries import RecordingRules


@pytest.fixture(scope="module")
def rules() -> RecordingRules:
    return RecordingRules(DEFAULT_RULES_DIR)


def test_a_rule_at_its_own_window_is_its_own_expression(rules: RecordingRules) -> None:
    record = "model_version:gateway_online_accuracy:ratio_rate5m"
    assert rules.windowed(record, "5m") == rules.expressions[record]


def test_every_range_takes_the_policy_window(rules: RecordingRules) -> None:
    query = rules.windowed("model_version:gateway_upstream_duration_seconds:p99_rate5m", "20s")
    assert re.findall(r"\[[^\]]+\]", query) == ["[20s]"]


def test_recorded_series_a_rule_reads_are_inlined_with_the_window(rules: RecordingRules) -> None:
    query = rules.windowed("model_version_statistic:gateway_drift_psi:rate30m", "20s")
    # The PSI rule reads two recorded series; neither may remain, nor their 30m range.
    assert "ratio_rate30m" not in query
    assert "gateway_drift_reference:ratio" not in query
    assert "gateway_drift_observations_total[20s]" in query
    assert "[30m]" not in query


def test_every_record_the_analysis_reads_exists() -> None:
    RecordingRules(DEFAULT_RULES_DIR, REQUIRED_RECORDS)


def test_a_rules_directory_without_them_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "other.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - record: a:b:c\n        expr: up\n"
    )
    with pytest.raises(EvidenceUnavailableError, match="gateway_shadow_agreement"):
        RecordingRules(tmp_path, REQUIRED_RECORDS)


def test_an_unknown_record_is_a_key_error(rules: RecordingRules) -> None:
    with pytest.raises(KeyError):
        rules.windowed("model_version:no_such:rule", "20s")
