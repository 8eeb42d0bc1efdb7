"""How many requests per second 1 and 2 Locust workers drive against a no-op target.

`python -m loadtests scaling` (`make load-scaling`) starts the no-op target
(`noop_target.py`: canned answers, microseconds per request), then for the HTTP user
(`JsonPredictUser`) and the gRPC user (`GrpcPredictUser`) runs the same distributed run as
`make load-distributed` with 1 and then 2 workers, users without think time. Each run is
measured over its steady part (every user spawned, before the stop), from Locust's own
per-second totals, while the CPU time of the master, each worker and the target is sampled.

It prints one table and writes it, with every run's full report, to
`reports/scaling-<time>/scaling.md`. On a machine with fewer free cores than workers plus
target, the ratio says how much CPU was left, not how well Locust scales: read the CPU
columns with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from loadtests.noop_target import target_command
from loadtests.report import AGGREGATED, read_history
from loadtests.run import (
    RunPlan,
    finish_run,
    headless_options,
    start_locust,
    without_run_settings,
)

PROTOCOL_USERS = {"http": "JSON", "grpc": "GRPC"}
WEIGHT_USER_NAMES = {"http": "JsonPredictUser", "grpc": "GrpcPredictUser"}
SAMPLE_INTERVAL_SECONDS = 0.5
# Seconds left out after the last user spawned and before the stop: spawn and stop jitter.
SETTLE_SECONDS = 2


@dataclass
class CpuSampler:
    """Samples the CPU seconds of the Locust processes and the target in a thread."""

    locust: psutil.Process
    target: psutil.Process
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """Record (unix time, {role: cumulative CPU seconds}) once."""
        cpu: dict[str, float] = {}
        try:
            cpu["master"] = sum(self.locust.cpu_times()[:2])
            for index, worker in enumerate(self.locust.children()):
                cpu[f"worker {index + 1}"] = sum(worker.cpu_times()[:2])
            cpu["target"] = sum(self.target.cpu_times()[:2])
        except psutil.Error:  # a process ended between the listing and the reading
            return
        machine = psutil.cpu_times()
        cpu["machine"] = machine.user + machine.nice + machine.system + machine.irq
        cpu["machine"] += machine.softirq + getattr(machine, "steal", 0.0)
        self.samples.append((time.time(), cpu))

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
            self.sample()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def cores(self, start: float, end: float) -> dict[str, float]:
        """Average cores each role used between two times (from the nearest samples)."""
        inside = [(t, cpu) for t, cpu in self.samples if start <= t <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {
            role: (last[role] - first.get(role, 0.0)) / (t1 - t0) for role in last if role in first
        }


@dataclass(frozen=True)
class ScalingResult:
    """One run's steady throughput and the CPU it took."""

    protocol: str
    workers: int
    requests_per_second: float
    cores: dict[str, float]
    run_dir: Path

    @property
    def other_cores(self) -> float:
        """Cores the rest of the machine used meanwhile (other people's work, the OS)."""
        ours = sum(value for role, value in self.cores.items() if role != "machine")
        return max(0.0, self.cores.get("machine", 0.0) - ours)


def steady_throughput(run_dir: Path, users: int) -> tuple[float, float, float]:
    """(requests/s, start, end) over the seconds when all `users` ran."""
    total = [point for point in read_history(run_dir) if point.kind == AGGREGATED]
    full = [point for point in total if point.users == users]
    if len(full) < 2 * SETTLE_SECONDS + 2:
        raise RuntimeError(f"{run_dir}: too short a steady part to measure; run longer")
    first, last = full[SETTLE_SECONDS], full[-1 - SETTLE_SECONDS]
    rate = (last.total_requests - first.total_requests) / (last.timestamp - first.timestamp)
    return rate, first.timestamp, last.timestamp


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(
    protocol: str,
    workers: int,
    users: int,
    run_time: str,
    http_port: int,
    grpc_port: int,
    target: psutil.Process,
    out_dir: Path,
) -> ScalingResult:
    """One distributed run against the no-op target, measured over its steady part."""
    weights = {f"LOAD_WEIGHT_{kind}": "0" for kind in ("JSON", "IMAGE", "B64", "STATUS", "GRPC")}
    weights[f"LOAD_WEIGHT_{PROTOCOL_USERS[protocol]}"] = "1"
    env = {
        **without_run_settings(os.environ),
        **weights,
        "LOAD_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        "LOAD_WAIT_MIN_SECONDS": "0",
        "LOAD_WAIT_MAX_SECONDS": "0",
        "LOAD_FEEDBACK_SHARE": "0",
        "LOAD_BATCH_SIZE": "1",
        "LOAD_SAMPLE_SIZE": "100",
        # The subject is throughput: a CPU-bound generator's latency is not the target's.
        "SLO_P95_MS": "60000",
        "SLO_P99_MS": "60000",
    }
    plan = RunPlan(
        run_dir=out_dir / f"{protocol}-{workers}workers",
        workers=workers,
        master_port=free_port(),
        locust_args=headless_options(
            f"http://127.0.0.1:{http_port}", users, run_time, stop_timeout=2
        ),
        env=env,
    )
    process, record = start_locust(plan)
    sampler = CpuSampler(psutil.Process(process.pid), target)
    thread = sampler.start()
    try:
        finish_run(plan, process, record)
    finally:
        sampler.stop()
        thread.join()
    rate, start, end = steady_throughput(plan.run_dir, users)
    return ScalingResult(protocol, workers, rate, sampler.cores(start, end), plan.run_dir)


def render(results: list[ScalingResult], users: int, run_time: str) -> str:
    """The scaling table, in Markdown, with the machine it ran on."""
    lines = [
        f"# Locust scaling: 1 vs 2 workers against a no-op target ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"{psutil.cpu_count()} logical CPUs; {users} users without think time, {run_time} per "
        f"run, measured over the steady part (all users spawned, {SETTLE_SECONDS} s left out "
        "at each end). CPU columns are cores used on average over that part; the rest of the "
        "machine is everything else that ran meanwhile.",
        "",
        "| user | workers | req/s | vs 1 worker | CPU: workers (cores) | req/s per worker core "
        "| master | target | rest of the machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    baseline = {r.protocol: r.requests_per_second for r in results if r.workers == 1}
    for result in results:
        workers = {role: value for role, value in result.cores.items() if role.startswith("w")}
        workers_cpu = " + ".join(f"{value:.2f}" for _, value in sorted(workers.items()))
        per_core = result.requests_per_second / sum(workers.values()) if workers else None
        base = baseline.get(result.protocol)
        versus = f"{result.requests_per_second / base:.2f}x" if base else "-"
        lines.append(
            f"| {WEIGHT_USER_NAMES[result.protocol]} ({result.protocol}) | {result.workers} | "
            f"{result.requests_per_second:,.0f} | {versus} | {workers_cpu or '-'} | "
            f"{f'{per_core:,.0f}' if per_core else '-'} | "
            f"{result.cores.get('master', 0):.2f} | {result.cores.get('target', 0):.2f} | "
            f"{result.other_cores:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_scaling(
    reports_dir: Path,
    users: int = 32,
    run_time: str = "20s",
    worker_counts: tuple[int, ...] = (1, 2),
    protocols: tuple[str, ...] = ("http", "grpc"),
) -> Path:
    """Measure every protocol at every worker count; write and print the table."""
    out_dir = reports_dir / f"scaling-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out_dir.mkdir(parents=True)
    http_port, grpc_port = free_port(), free_port()
    target_process = subprocess.Popen(
        target_command(http_port, grpc_port), cwd=Path(__file__).absolute().parents[1]
    )
    try:
        wait_for_http(f"http://127.0.0.1:{http_port}/readyz")
        target = psutil.Process(target_process.pid)
        results = [
            measure(protocol, workers, users, run_time, http_port, grpc_port, target, out_dir)
            for protocol in protocols
            for workers in worker_counts
        ]
    finally:
        target_process.terminate()
        target_process.wait(10)
    table = render(results, users, run_time)
    (out_dir / "scaling.md").write_text(table)
    print(table, flush=True)
    print(f"scaling report: {out_dir / 'scaling.md'}", flush=True)
    return out_dir
