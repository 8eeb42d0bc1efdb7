"""Policy files: the shipped ones validate; mistakes are errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.config import PACKAGE_DIR
from rollout.errors import PolicyError
from rollout.policy import duration_seconds, load_policies, load_policy


def test_the_shipped_policies_validate() -> None:
    policies = load_policies(PACKAGE_DIR / "policies")
    assert "mnist" in policies
    assert policies["mnist"].canary.steps == [5.0, 25.0, 50.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20s", 20.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25)],
)
def test_durations_are_prometheus_durations(text: str, expected: float) -> None:
    assert duration_seconds(text) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("model: mnist\ncanary:\n  window: 5x\n", "canary.window"),
        ("model: mnist\ncanary:\n  steps: [25, 5]\n", "must rise"),
        ("model: mnist\nchecks:\n  accuracy:\n    min_feedbak: 3\n", "min_feedbak"),
        ("model: mnist\nshadow:\n  percent: 0\n", "shadow.percent"),
        ("- a list\n", "a mapping"),
        ("model: other\n", "belongs in other.yaml"),
    ],
)
def test_a_mistake_names_the_file_and_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "mnist.yaml"
    path.write_text(body)
    with pytest.raises(PolicyError, match=message) as raised:
        load_policy(path)
    assert str(path) in str(raised.value)


def test_a_directory_without_policies_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policy files"):
        load_policies(tmp_path)
