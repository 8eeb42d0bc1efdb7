"""`trainer train --distributed`: two real worker processes on localhost.

MultiWorkerMirroredStrategy from TF_CONFIG trains the MLP on the offline sample: the chief
alone exports, and its model scores as single-process training at the same seed and global
batch size. A worker killed mid-run fails the job, named, within a bounded time.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.processes import PYTHON, ManagedProcess, free_port, wait_until
from trainer.distributed import Cluster, read_cluster, tf_config_from_env
from trainer.errors import InvalidOptionError
from trainer.repository import METADATA_PATH, list_versions

SEED = 7
PER_WORKER_BATCH = 32
EPOCHS = 3


def start_workers(
    process_factory: Callable[..., ManagedProcess], tmp_path: Path, *extra: str
) -> tuple[list[ManagedProcess], list[int]]:
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        args = [
            PYTHON, "-m", "trainer", "train", "--distributed", "--model", "mlp",
            "--dataset", "offline", "--seed", str(SEED), "--batch-size", str(PER_WORKER_BATCH),
            "--model-repository", str(tmp_path / "repo"), "--output-dir", str(tmp_path / "runs"),
            "--min-accuracy", "0", "--max-regression", "1", *extra,
        ]  # fmt: skip
        env = {"TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        workers.append(process_factory(args, f"worker-{index}", env=env))
    return workers, ports


@pytest.mark.slow
def test_two_workers_train_like_one_process(process_factory, tmp_path: Path) -> None:
    from trainer.pipeline import TrainConfig, run_training

    started = time.monotonic()
    workers, _ = start_workers(process_factory, tmp_path, "--epochs", str(EPOCHS))
    for worker in workers:
        worker.process.wait(timeout=300)
    two_workers = time.monotonic() - started
    for worker in workers:
        assert worker.process.returncode == 0, worker.log_tail()
    # Only the chief published, once; the other worker printed no version.
    assert list_versions(tmp_path / "repo" / "mnist") == [1]
    version_dir = tmp_path / "repo" / "mnist" / "1"
    assert str(version_dir) in workers[0].log_path.read_text()
    assert str(version_dir) not in workers[1].log_path.read_text()
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the chief's run outputs only
    metadata = json.loads((version_dir / METADATA_PATH).read_text())
    assert metadata["training"]["workers"] == 2
    assert metadata["training"]["global_batch_size"] == 2 * PER_WORKER_BATCH
    assert "upload" in metadata["metrics"]

    # One process, the same seed and global batch size.
    started = time.monotonic()
    single = run_training(
        TrainConfig(
            model="mlp", dataset="offline", seed=SEED, epochs=EPOCHS,
            batch_size=2 * PER_WORKER_BATCH, model_repository=tmp_path / "single",
            output_dir=tmp_path / "single-runs", min_accuracy=0, max_regression=1,
            push_metrics=False,
        )
    )  # fmt: skip
    one_process = time.monotonic() - started
    print(f"\n2 workers {two_workers:.1f}s, 1 process (in-process) {one_process:.1f}s")
    assert metadata["metrics"]["accuracy"] == pytest.approx(single.metrics["accuracy"], abs=0.01)


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_naming_it(process_factory, tmp_path: Path) -> None:
    workers, ports = start_workers(
        process_factory, tmp_path, "--epochs", "500", "--patience", "500", "--worker-timeout", "30"
    )
    chief, victim = workers
    # Mid-run: once the chief has finished an epoch (Keras prints one line per epoch).
    wait_until(
        lambda: "val_accuracy" in chief.log_path.read_text() or not chief.alive(),
        timeout=240,
        message="the first epoch",
    )
    assert chief.alive(), chief.log_tail()
    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    chief.process.wait(timeout=90)
    took = time.monotonic() - killed
    print(f"\nthe chief failed {took:.1f}s after worker 1 was killed")
    log = chief.log_path.read_text()
    assert chief.process.returncode == 1, log[-3000:]
    assert took < 60, f"the chief took {took:.0f}s to give up"
    assert f"worker 1 (localhost:{ports[1]}" in log, log[-3000:]
    assert "distributed training failed on worker 0" in log
    assert list_versions(tmp_path / "repo" / "mnist") == []


def test_tf_config_comes_from_the_env_or_the_indexed_jobs_variables() -> None:
    spec = {"worker": ["a:1", "b:2"]}
    config = {"cluster": spec, "task": {"type": "worker", "index": 1}}
    assert tf_config_from_env({"TF_CONFIG": json.dumps(config)}) == config
    built = read_cluster({"TRAINER_WORKER_HOSTS": "a:1, b:2", "JOB_COMPLETION_INDEX": "1"})
    assert built == Cluster(spec, "worker", 1) and not built.is_chief
    assert read_cluster({"TRAINER_WORKER_HOSTS": "a:1,b:2", "JOB_COMPLETION_INDEX": "0"}).is_chief
    with_chief = Cluster({"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0)
    assert not with_chief.is_chief and with_chief.num_workers == 2
    assert with_chief.peers() == [("chief 0", "c:0")]
    for broken in (
        {},
        {"TF_CONFIG": "{"},
        {"TF_CONFIG": json.dumps({"cluster": spec, "task": {"type": "worker", "index": 2}})},
        {"TRAINER_WORKER_HOSTS": "a:1"},
    ):
        with pytest.raises(InvalidOptionError):
            read_cluster(broken)


def test_a_dead_peer_is_named_with_its_address() -> None:
    from trainer.distributed import describe_lost_peers

    port = free_port()  # nothing listens there
    cluster = Cluster({"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}"]}, "worker", 0)
    message = describe_lost_peers(cluster)
    assert message.startswith(f"lost worker 1 (127.0.0.1:{port}: ")
    assert "refused" in message.lower()
