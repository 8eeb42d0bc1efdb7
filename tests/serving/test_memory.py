"""Memory: a version rolled over is freed, even with batching on and under load.

A model of about 55 MB is rolled over 8 times while clients send requests; the server's
RSS (read from /proc) may not grow by one model's size after the first rollover, and no
request may fail. Before versions were freed, each rollover kept about one model alive.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.fixtures.processes import wait_until
from tests.fixtures.serving import SERVING_CONFIG_DIR, launch_model_server
from tests.serving.helpers import predict_request

pytestmark = pytest.mark.slow

MODEL = "large"
HIDDEN = 17_408  # 784 x 17,408 + 17,408 x 10 float32 weights: about 55 MB
ROLLOVERS = 8
CLIENTS = 4


def build_large_model(path: Path) -> int:
    """A SavedModel with ~55 MB of weights, signature `images` [None, 784] -> `scores`.

    Returns the size of its variables in bytes (its in-memory size once loaded)."""
    import tensorflow as tf

    class Large(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = tf.random.Generator.from_seed(7)
            self.hidden = tf.Variable(generator.normal([784, HIDDEN]) * 0.01)
            self.output = tf.Variable(generator.normal([HIDDEN, 10]) * 0.01)

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def serving_default(self, images):
            hidden = tf.nn.relu(tf.matmul(images, self.hidden))
            return {"scores": tf.nn.softmax(tf.matmul(hidden, self.output))}

    module = Large()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serving_default})
    return (784 * HIDDEN + HIDDEN * 10) * 4


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _state(channel: grpc.Channel, version: int) -> int | None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    return {s.version: s.state for s in response.model_version_status}.get(version)


def test_rolling_over_a_large_model_under_load_frees_each_old_version(tmp_path):
    source = tmp_path / "source"
    model_bytes = build_large_model(source)
    base_path = tmp_path / MODEL
    base_path.mkdir()
    shutil.copytree(source, base_path / "1")
    server = launch_model_server(
        tmp_path,
        base_path=base_path,
        model_name=MODEL,
        enable_batching=True,
        batching_parameters_file=SERVING_CONFIG_DIR / "batching.config",
        file_system_poll_wait_seconds=1,
    )
    pid = server.process.pid
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    end = get_model_status_pb2.ModelVersionStatus.END
    images = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    stop = threading.Event()
    served: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(100_000):  # bounded; the rollovers take well under a minute
                if stop.is_set():
                    return
                try:
                    response = stub.Predict(predict_request(images, name=MODEL), timeout=30)
                    with lock:
                        served.append(response.model_spec.version.value)
                except grpc.RpcError as error:
                    with lock:
                        failures.append(f"{error.code()}: {error.details()}")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    rss: list[int] = []
    channel = grpc.insecure_channel(server.grpc_target)
    try:
        for version in range(2, ROLLOVERS + 2):
            staging = base_path / f".tmp-{version}"
            shutil.copytree(source, staging)
            staging.rename(base_path / str(version))  # published atomically, as the trainer does
            wait_until(
                lambda v=version: _state(channel, v) == available, 120, message=f"v{version}"
            )
            wait_until(
                lambda v=version: _state(channel, v - 1) == end, 120, message=f"v{version - 1} END"
            )
            count = len(served)
            wait_until(lambda c=count: len(served) >= c + 20, 60, message="requests served")
            shutil.rmtree(base_path / str(version - 1))
            rss.append(rss_bytes(pid))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        channel.close()
        server.process.stop()
    growth = rss[-1] - rss[0]
    print(
        f"\nRSS after each rollover (MB): {[round(r / 2**20) for r in rss]}; growth after the "
        f"first {growth / 2**20:.0f} MB; model {model_bytes / 2**20:.0f} MB; "
        f"{len(served)} requests, {len(failures)} failed"
    )
    assert failures == []
    assert set(served) >= {1, ROLLOVERS + 1}
    assert growth < model_bytes, [round(r / 2**20) for r in rss]
