"""`trainer train --distributed`: TensorFlow's MultiWorkerMirroredStrategy, from TF_CONFIG.

TensorFlow does the distributed work (collective all-reduce of the gradients, every
worker a replica); this module only sets it up and guards it:

- the cluster comes from `TF_CONFIG` (the Kubeflow TFJob operator sets it), or is built
  from `TRAINER_WORKER_HOSTS` and the pod's `JOB_COMPLETION_INDEX` (a plain Indexed Job);
- the chief is the `chief` task, else worker 0; only it evaluates and exports;
- a watchdog turns a dead peer into a clear failure: when no training step completes for
  `--worker-timeout` seconds, or TensorFlow reports a collective failure, it probes every
  peer's address and names the ones that do not answer, then ends the process with exit
  code 1. A dead worker never leaves the job hanging.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.errors import EXIT_FAILURE, InvalidOptionError

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
WORKER_HOSTS = "TRAINER_WORKER_HOSTS"
JOB_INDEX = "JOB_COMPLETION_INDEX"
PROBE_TIMEOUT_SECONDS = 2.0
DEFAULT_WORKER_TIMEOUT_SECONDS = 120.0


class WorkerLostError(RuntimeError):
    """A peer of the cluster stopped answering; the message names it."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that TF_CONFIG describes."""

    spec: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        return sum(len(addresses) for addresses in self.spec.values())

    @property
    def is_chief(self) -> bool:
        if "chief" in self.spec:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"

    def peers(self) -> list[tuple[str, str]]:
        """(name, address) of every other task."""
        return [
            (f"{job} {index}", address)
            for job, addresses in self.spec.items()
            for index, address in enumerate(addresses)
            if (job, index) != (self.task_type, self.task_index)
        ]


def tf_config_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """TF_CONFIG as a dict: from TF_CONFIG, else built from the Indexed Job's variables.

    `TRAINER_WORKER_HOSTS` lists every worker's host:port in index order (with an Indexed
    Job and a headless Service: `<job>-<i>.<service>:<port>`); `JOB_COMPLETION_INDEX`,
    which Kubernetes sets in each pod of an Indexed Job, is this worker's index.
    """
    environ = os.environ if environ is None else environ
    if environ.get(TF_CONFIG):
        try:
            return json.loads(environ[TF_CONFIG])
        except ValueError as error:
            raise InvalidOptionError(f"TF_CONFIG is not JSON: {error}") from None
    hosts = [host.strip() for host in environ.get(WORKER_HOSTS, "").split(",") if host.strip()]
    if hosts and environ.get(JOB_INDEX, "").isdigit():
        return {
            "cluster": {"worker": hosts},
            "task": {"type": "worker", "index": int(environ[JOB_INDEX])},
        }
    raise InvalidOptionError(
        f"--distributed needs TF_CONFIG (set by the TFJob operator), or {WORKER_HOSTS} and "
        f"{JOB_INDEX} (an Indexed Job)"
    )


def read_cluster(environ: dict[str, str] | None = None) -> Cluster:
    """The cluster and this task, validated, from the environment."""
    config = tf_config_from_env(environ)
    spec = {
        job: list(addresses)
        for job, addresses in config.get("cluster", {}).items()
        if job in ("chief", "worker")
    }
    task = config.get("task", {})
    task_type, task_index = task.get("type"), task.get("index")
    if not spec or task_type not in spec or not isinstance(task_index, int):
        raise InvalidOptionError(
            f"TF_CONFIG needs a cluster with chief/worker addresses and this task's type and "
            f"index among them; got {config}"
        )
    if not 0 <= task_index < len(spec[task_type]):
        raise InvalidOptionError(
            f"TF_CONFIG: task {task_type} {task_index} is not in the cluster {spec}"
        )
    return Cluster(spec, task_type, task_index)


def probe(address: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when something accepts TCP connections at host:port, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def describe_lost_peers(cluster: Cluster, patience: float = 0.0) -> str:
    """Which peers do not answer, by name and address; the message of a failed job.

    A peer killed a moment ago may still hold its port for a little while: with
    `patience`, probe again (every half second) until one fails or the time is up.
    """
    deadline = time.monotonic() + patience
    while True:
        lost = [
            f"{name} ({address}: {why})"
            for name, address in cluster.peers()
            if (why := probe(address)) is not None
        ]
        if lost:
            return f"lost {', '.join(lost)}: it died or was stopped, and training cannot go on"
        if time.monotonic() >= deadline:
            return "a peer stopped taking part in training, yet every address still answers"
        time.sleep(0.5)


class Watchdog:
    """Ends the process with a clear message when a peer dies or training stalls.

    A thread probes every peer's address every `interval` seconds: a dead worker's port
    refuses connections (its pod's name stops resolving, in Kubernetes), and two failed
    probes in a row end this process naming it. `beat()` marks progress (a Keras callback
    calls it after every batch); while training, no beat for `timeout` seconds ends the
    process too, for a peer that hangs with its port open. After training (`finishing()`),
    only the probes count: the chief's evaluation and export make no steps.
    """

    def __init__(self, cluster: Cluster, timeout: float, interval: float = 2.0) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.interval = min(interval, timeout / 4)
        self._last = time.monotonic()
        self._training = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def beat(self) -> None:
        self._last = time.monotonic()

    def finishing(self) -> None:
        self._training = False

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        failed_before: set[str] = set()
        while not self._stop.wait(self.interval):
            failing = {name for name, address in self.cluster.peers() if probe(address)}
            stalled = time.monotonic() - self._last
            if self._stop.is_set():
                return
            if failing & failed_before:
                fail(self.cluster, "it stopped answering")
            if self._training and stalled > self.timeout:
                fail(
                    self.cluster,
                    f"no training step finished for {stalled:.0f} s (--worker-timeout "
                    f"{self.timeout:.0f})",
                )
            failed_before = failing


def fail(cluster: Cluster, why: str, patience: float = 10.0) -> None:
    """Report a lost peer from this task, and end the process at once (exit code 1).

    os._exit, not an exception: the main thread is blocked inside a TensorFlow collective
    that no exception can interrupt, and TensorFlow's shutdown would wait for the dead peer.
    """
    message = (
        f"error: distributed training failed on {cluster.name}: "
        f"{describe_lost_peers(cluster, patience)} ({why})"
    )
    log.error(message)
    print(message, file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_FAILURE)


def progress_callback(watchdog: Watchdog) -> Any:
    """A Keras callback that feeds the watchdog after every batch and epoch."""
    import keras

    class Heartbeat(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            watchdog.beat()

        def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
            watchdog.beat()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            watchdog.beat()

    return Heartbeat()


def create_strategy(cluster: Cluster) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy for this cluster; call before any other TensorFlow op.

    It starts this task's gRPC server and blocks until every worker has joined.
    """
    import tensorflow as tf

    os.environ[TF_CONFIG] = json.dumps(
        {"cluster": cluster.spec, "task": {"type": cluster.task_type, "index": cluster.task_index}}
    )
    # RING: plain gRPC collectives, no NCCL; this engine runs on CPU nodes too.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker gets here (an all-reduce of one number)."""
    import tensorflow as tf

    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def is_collective_failure(error: BaseException) -> bool:
    """Whether TensorFlow raised because a peer went away (as opposed to a bug here)."""
    import tensorflow as tf

    return isinstance(
        error,
        tf.errors.UnavailableError
        | tf.errors.DeadlineExceededError
        | tf.errors.CancelledError
        | tf.errors.AbortedError
        | tf.errors.InternalError,
    )
