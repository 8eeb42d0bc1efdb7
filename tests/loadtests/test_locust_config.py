"""Bad load-test settings stop Locust before the run, with a message saying what to fix."""

import pytest

from tests.fixtures.processes import free_port

from .locust_runs import run_locust

pytestmark = pytest.mark.slow


def test_bad_settings_fail_fast_and_say_what_to_fix(tmp_path):
    env = {"LOAD_FEEDBACK_SHARE": "1.5"}
    message = "LOAD_FEEDBACK_SHARE must be between 0 and 1, got 1.5"

    run = run_locust(tmp_path, host="http://127.0.0.1:9", env=env, run_time="2s", timeout=60)

    assert run.returncode != 0
    assert f"load test configuration error: {message}" in run.output
    assert "All users spawned" not in run.output  # refused before any load was sent


def test_a_gateway_that_is_not_running_is_named_before_any_load(tmp_path):
    host = f"http://127.0.0.1:{free_port()}"

    run = run_locust(tmp_path, host=host, env={}, run_time="2s", timeout=60)

    assert run.returncode != 0
    assert f"gateway not ready at {host}/readyz" in run.output
    assert "start the stack with `make up`, or point LOAD_HOST at a running gateway" in run.output
    assert "All users spawned" not in run.output
