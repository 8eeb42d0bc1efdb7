"""A gRPC target that does not answer stops Locust before the run, saying what to fix
(issue 15: such a run went to the end with 11% "connection refused")."""

import pytest

from tests.fixtures.processes import free_port

from .locust_runs import ALL_WEIGHTS_ZERO, run_locust

pytestmark = pytest.mark.slow


def test_an_unreachable_grpc_target_is_named_before_any_load(tmp_path):
    target = f"127.0.0.1:{free_port()}"
    env = {**ALL_WEIGHTS_ZERO, "LOAD_WEIGHT_GRPC": "1", "LOAD_GRPC_TARGET": target}

    run = run_locust(tmp_path, host="http://127.0.0.1:9", env=env, run_time="3s", timeout=90)

    assert run.returncode != 0
    assert f"model server not reachable at {target} (gRPC)" in run.output, run.output[-2000:]
    assert "LOAD_GRPC_TARGET" in run.output
    assert "All users spawned" not in run.output
