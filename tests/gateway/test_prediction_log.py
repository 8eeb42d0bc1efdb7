"""The prediction log: files, rotation, retention, bounds and failures, then real processes.

Unit tests drive `LogFiles` and `PredictionLog` with a clock of their own. The process
tests run `python -m gateway` over the session model server and a real Redis, with
logging sampled at 0: every labelled prediction must still reach the log with its pixels,
and `python -m trainer log summary` must read what the gateway wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.metrics import GatewayMetrics
from gateway.prediction_log import LogFiles, PredictionLog, encode_record
from tests.fixtures.processes import PYTHON, REPO_ROOT, wait_until
from tests.gateway.test_feedback_replicas import counter
from trainer.prediction_log_reader import LogReader, load_labelled, summarize

HOUR = 3600.0
T0 = datetime(2026, 1, 2, 3, 4, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_files(tmp_path: Path, clock: Clock, **limits: float) -> LogFiles:
    options = {"file_max_bytes": 10_000, "max_bytes": 10**9, "max_age_seconds": 30 * 86400}
    options.update(limits)
    return LogFiles(tmp_path, "replica-a", clock=clock, **options)


def record(index: int, kind: str = "prediction") -> dict:
    return {"type": kind, "prediction_id": f"id-{index}", "model": "mnist", "version": 1}


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_files_rotate_by_size_and_by_hour(tmp_path: Path) -> None:
    clock = Clock()
    files = make_files(tmp_path, clock, file_max_bytes=200)
    line = encode_record(record(0))
    for _ in range(5):
        files.append(line)
    clock.now += HOUR
    files.append(line)
    per_file = 200 // len(line)
    hour0, hour1 = "20260102T03", "20260102T04"
    expected_first_hour = -(-5 // per_file)
    assert names(tmp_path) == [
        *(f"predictions-replica-a-{hour0}-{seq:04d}.ndjson" for seq in range(expected_first_hour)),
        f"predictions-replica-a-{hour1}-0000.ndjson",
    ]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 200
        assert path.read_bytes().endswith(b"\n")


def test_retention_removes_old_files_then_the_oldest_over_the_size_limit(tmp_path: Path) -> None:
    clock = Clock()
    old = tmp_path / "predictions-replica-b-20251201T00-0000.ndjson"
    old.write_bytes(b"{}\n")
    os.utime(old, (T0 - 40 * 86400, T0 - 40 * 86400))
    other = tmp_path / "notes.txt"  # not a log file: never touched
    other.write_text("keep")
    files = make_files(tmp_path, clock, file_max_bytes=300, max_bytes=700)
    line = encode_record(record(0))
    for _ in range(12):
        clock.now += 1
        files.append(line)
        os.utime(files.path, (clock.now, clock.now))
    files.enforce_retention()
    left = names(tmp_path)
    assert old.name not in left and "notes.txt" in left
    logged = [tmp_path / name for name in left if name.endswith(".ndjson")]
    assert sum(path.stat().st_size for path in logged) <= 700
    assert files.path is not None and files.path.name in left  # the open file stays


def test_a_full_disk_is_counted_and_leaves_no_partial_line(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC, as a full volume does."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")

    class FullDisk(LogFiles):
        """Each file it opens is /dev/full behind the log file's descriptor."""

        def _open(self, hour: str) -> None:
            super()._open(hour)
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, self._fd)
            os.close(full)

    files = FullDisk(tmp_path, "replica-a", 10_000, 10**9, 30 * 86400, clock=Clock())
    metrics = GatewayMetrics()
    log = PredictionLog(files, 100, metrics)
    log.start()
    for index in range(3):
        log.submit(record(index))
    assert log.flush()
    log.stop()
    assert metrics.log_dropped.labels("write_error")._value.get() == 3
    assert metrics.log_records.labels("prediction")._value.get() == 0
    assert [path.stat().st_size for path in tmp_path.iterdir()] == [0]


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    log = PredictionLog(make_files(tmp_path, Clock()), 2, metrics)  # writer not started
    started = time.perf_counter()
    for index in range(5):
        log.submit(record(index))
    assert time.perf_counter() - started < 0.1
    assert metrics.log_dropped.labels("queue_full")._value.get() == 3


def test_the_reader_skips_torn_and_malformed_lines_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions-replica-a-20260102T03-0000.ndjson"
    good = encode_record(record(1))
    path.write_bytes(
        good
        + b"not json\n"
        + b'["a list"]\n'
        + b'{"schema": 99, "type": "prediction"}\n'
        + good
        + b'{"schema": 1, "type": "predic'  # a crash tore the last line
    )
    reader = LogReader(tmp_path)
    records = list(reader.records())
    assert [r["prediction_id"] for r in records] == ["id-1", "id-1"]
    assert [(bad.path, bad.line) for bad in reader.bad_lines] == [
        (path, 2),
        (path, 3),
        (path, 4),
        (path, 6),
    ]
    assert "torn" in reader.bad_lines[-1].reason
    summary = summarize(tmp_path)
    assert len(summary.bad_lines) == 4 and summary.versions[("mnist", 1)].predictions == 2


# Real processes: gateway + model server + Redis.

PREDICT = "/v1/models/mnist/predict"


def log_records(directory: Path) -> list[dict]:
    reader = LogReader(directory)
    records = list(reader.records())
    assert reader.bad_lines == []
    return records


@pytest.mark.slow
def test_labelled_inputs_reach_the_log_whatever_the_sampling(
    model_server, redis_server, start_gateway, mnist_test_images, tmp_path: Path
) -> None:
    images, labels = mnist_test_images
    log_dir = tmp_path / "log"
    gateway = start_gateway(
        model_server.grpc_target,
        redis_url=redis_server.url,
        log_dir=log_dir,
        log_sample=0,
        log_file_max_bytes=4096,
    )
    sent = images[:12].astype(np.uint8)
    response = httpx.post(
        gateway.url + PREDICT,
        json={"instances": sent.astype(int).tolist(), "value_range": "0-255"},
        headers={"X-Request-ID": "log-test-1"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    ids = [p["prediction_id"] for p in body["predictions"]]
    # Feedback for the first 5 only, straight after the prediction.
    feedback = [
        {"prediction_id": i, "label": int(y)} for i, y in zip(ids[:5], labels[:5], strict=True)
    ]
    assert httpx.post(gateway.url + "/v1/feedback", json=feedback, timeout=10).status_code == 200

    def written() -> bool:
        kinds = [r["type"] for r in LogReader(log_dir).records()]
        return kinds.count("prediction") == 12 and kinds.count("feedback") == 5

    wait_until(written, 10, message="12 prediction and 5 feedback records")
    records = log_records(log_dir)
    assert len(list(log_dir.iterdir())) > 1  # 4 KB files: rotated by size
    predictions = {r["prediction_id"]: r for r in records if r["type"] == "prediction"}
    assert set(predictions) == set(ids)
    for index, prediction_id in enumerate(ids):
        logged = predictions[prediction_id]
        assert "input" not in logged  # sampled at 0
        assert logged["input_sha256"] == hashlib.sha256(sent[index].tobytes()).hexdigest()
        assert logged["class"] == body["predictions"][index]["class"]
        assert logged["version"] == body["version"] and logged["request_id"] == "log-test-1"
        assert logged["route"] == "predict" and logged["input_kind"] == "array"
        assert logged["schema"] == 1 and len(logged["probabilities"]) == 10
    labelled = [r for r in records if r["type"] == "feedback"]
    for item in labelled:
        pixels = base64.b64decode(item["input"])
        assert (
            hashlib.sha256(pixels).hexdigest() == predictions[item["prediction_id"]]["input_sha256"]
        )
    images_back, labels_back = load_labelled(log_dir)
    np.testing.assert_array_equal(images_back, sent[:5])
    np.testing.assert_array_equal(labels_back, labels[:5])

    summary = subprocess.run(
        [PYTHON, "-m", "trainer", "log", "summary", "--log-dir", str(log_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=True,
    ).stdout  # fmt: skip
    version = body["version"]
    correct = sum(p["class"] == y for p, y in zip(body["predictions"][:5], labels[:5], strict=True))
    row = next(line for line in summary.splitlines() if line.startswith("mnist "))
    assert row.split()[:5] == ["mnist", str(version), "12", "0", "5"], summary
    assert f"{5 / 12:.1%}" in row and f"{correct / 5:.1%}" in row
    assert "predicted class mix" in summary and "true label mix" in summary


@pytest.mark.slow
def test_an_unwritable_log_never_fails_a_request(
    model_server, start_gateway, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the log directory should be")
    gateway = start_gateway(model_server.grpc_target, log_dir=blocked)
    body = {"instances": [np.full((28, 28), 0.3).tolist()]}
    for _ in range(3):
        assert httpx.post(gateway.url + PREDICT, json=body, timeout=10).status_code == 200

    def counted() -> float:
        text = httpx.get(gateway.url + "/metrics", timeout=5).text
        return counter(text, "gateway_prediction_log_dropped_total", reason="write_error")

    wait_until(lambda: counted() == 3, 10, message="3 write errors counted")
    assert json.loads(httpx.get(gateway.url + "/healthz", timeout=5).text)["status"] == "ok"
