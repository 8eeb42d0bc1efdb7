"""The project's documents stand on their own and name what the gateway exports."""

from __future__ import annotations

import re

from gateway.metrics import GatewayMetrics
from tests.fixtures.processes import REPO_ROOT

CONTRACTS = REPO_ROOT / "docs" / "CONTRACTS.md"


def test_contracts_point_nowhere_outside_the_repository() -> None:
    text = CONTRACTS.read_text()
    for target in re.findall(r"`([^`\s]+\.(?:md|py|yml|yaml|toml))`", text):
        assert not target.startswith(("../", "/")), target
        assert "shared/" not in target, target


def test_every_gateway_metric_is_listed_in_the_contracts() -> None:
    """gateway/metrics.py says the names are in docs/CONTRACTS.md: they must be."""
    text = CONTRACTS.read_text()
    registered = {family.name for family in GatewayMetrics().registry.collect()}
    for name in registered:
        exposed = f"{name}_total" if f"{name}_total" in text else name
        # The gateway's own metrics carry labels; the standard process_* ones have none.
        listed = f"`{exposed}{{" if name.startswith("gateway_") else f"`{exposed}`"
        assert listed in text, f"{name} is not in docs/CONTRACTS.md"


def test_the_observation_settings_are_in_the_readme_table() -> None:
    """Issue 17's settings (prediction log, drift, shadow) are in the configuration table."""
    from gateway.config import Settings

    readme = (REPO_ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `GATEWAY_")]
    names = [
        name for name in Settings.model_fields if name.startswith(("log_", "drift_", "shadow_"))
    ]
    assert names
    for name in names:
        if name == "log_level":
            continue
        assert any(f"`GATEWAY_{name.upper()}`" in line for line in table), name
