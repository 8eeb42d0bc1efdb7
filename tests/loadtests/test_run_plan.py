"""How `make load` and `make load-distributed` start Locust, and what a run records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from loadtests.run import RunPlan, default_run_name, locust_command, recorded_env


def test_a_distributed_run_forks_workers_onto_a_loopback_master():
    plan = RunPlan(Path("reports/r"), workers=3, master_port=6001, locust_args=("-u", "9"))

    command = locust_command(plan)

    assert command[command.index("--processes") + 1] == "3"
    assert command[command.index("--master-bind-host") + 1] == "127.0.0.1"
    assert command[command.index("--master-bind-port") + 1] == "6001"
    assert command[command.index("--master-port") + 1] == "6001"
    assert command[command.index("--csv") + 1] == "reports/r/locust"
    assert "--csv-full-history" in command and "--headless" in command
    assert command[-2:] == ["-u", "9"]  # Locust's own options come last, so they win


def test_a_local_run_is_one_process():
    command = locust_command(RunPlan(Path("reports/r")))

    assert "--processes" not in command and "--master-bind-port" not in command
    assert command[command.index("--html") + 1] == "reports/r/locust.html"


def test_run_names_sort_by_time_and_say_how_they_ran():
    now = datetime(2026, 12, 5, 7, 44, 42, tzinfo=UTC)

    assert default_run_name(0, now) == "20261205T074442Z-local"
    assert default_run_name(2, now) == "20261205T074442Z-2workers"


def test_the_run_records_scenario_settings_but_never_the_api_key():
    env = {"LOAD_SHAPE": "step", "SLO_P99_MS": "250", "LOAD_API_KEY": "secret", "HOME": "/x"}
    env["LOAD_USERS"] = "20"  # mk/load.mk's, passed to Locust as --users

    assert recorded_env(env) == {"LOAD_SHAPE": "step", "SLO_P99_MS": "250"}


def test_a_negative_worker_count_is_refused():
    with pytest.raises(ValueError, match="WORKERS must be 0"):
        RunPlan(Path("r"), workers=-1)
