"""The gRPC user's custom client under Locust: it reports calls and does not block gevent."""

import socket

import pytest

from tests.fixtures.processes import PYTHON, free_port

from .locust_runs import ALL_WEIGHTS_ZERO, run_locust

pytestmark = pytest.mark.slow

DELAY_SECONDS = 0.2
USERS = 5


def accepts_connections(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def test_grpc_users_overlap_their_calls(tmp_path, process_factory):
    port = free_port()
    server = process_factory(
        [PYTHON, "-m", "tests.loadtests.slow_predict_server", str(port), str(DELAY_SECONDS)],
        "slow_predict_server",
    )
    server.wait_ready(lambda: accepts_connections(port), timeout=30)

    run = run_locust(
        tmp_path,
        host="http://127.0.0.1:9",  # unused: only the gRPC user runs
        env={
            **ALL_WEIGHTS_ZERO,
            "LOAD_WEIGHT_GRPC": "1",
            "LOAD_GRPC_TARGET": f"127.0.0.1:{port}",
            "LOAD_WAIT_MIN_SECONDS": "0",
            "LOAD_WAIT_MAX_SECONDS": "0",
            "LOAD_SAMPLE_SIZE": "20",
            # The subject is overlap, not latency: every call takes DELAY_SECONDS by design,
            # so on a busy machine p95 crosses the default 300 ms gate by a few ms.
            "SLO_P95_MS": "5000",
            "SLO_P99_MS": "5000",
        },
        users=USERS,
        run_time="3s",
    )

    assert run.returncode == 0, run.output
    row = run.stats()["PredictionService/Predict"]
    assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, run.output
    # One user at a time could make at most 1/DELAY calls a second; a blocked gevent loop
    # serialises the users, so more than twice that proves the calls overlapped.
    serial_limit = 1 / DELAY_SECONDS
    assert float(row["Requests/s"]) > 2 * serial_limit, row
