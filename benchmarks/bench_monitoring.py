"""Benchmark the monitoring: what scraping and rule evaluation cost on the live stack.

Starts the embedded model server and the gateway on a model repository (training one
version first if it is empty), a Pushgateway with the trainer's metrics, and Prometheus
with monitoring/prometheus.yml's jobs and monitoring/rules at a 1 s scrape and evaluation
interval (15x the production rate, so costs show up in a short run). Sends predictions
and feedback from a few threads for --seconds, then prints markdown tables: per scrape
target the exposition size and scrape time, per rule group the evaluation time, and
Prometheus's own series count, memory and CPU.

    python benchmarks/bench_monitoring.py [--seconds 30] [--threads 4] [--model-repository DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.monitoring import (  # noqa: E402 (needs the repo root on sys.path)
    find_binary,
    stack_targets,
    start_prometheus_process,
    start_pushgateway,
)
from tests.fixtures.processes import PYTHON, ManagedProcess, free_port  # noqa: E402

MODEL = "mnist"


def ensure_model(repository: Path) -> int:
    """The latest version in `repository`, training one first if there is none."""
    subprocess.run(
        [PYTHON, "-m", "trainer", "train", "--if-empty", "--model-repository", str(repository)],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PUSHGATEWAY_URL": ""},
    )
    return max(int(p.name) for p in (repository / MODEL).iterdir() if p.name.isdigit())


def start_stack(workdir: Path, repository: Path) -> tuple[SimpleNamespace, SimpleNamespace, list]:
    """Model server and gateway on free loopback ports; return them and their processes."""
    grpc_port, rest_port, gateway_port = free_port(), free_port(), free_port()
    server = ManagedProcess(
        [
            PYTHON, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={MODEL}", f"--model_base_path={(repository / MODEL).resolve()}",
            "--enable_batching",
            f"--batching_parameters_file={REPO_ROOT / 'serving/config/batching.config'}",
            f"--monitoring_config_file={REPO_ROOT / 'serving/config/monitoring.config'}",
        ],
        workdir / "model-server.log",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    ).start()  # fmt: skip
    model_server = SimpleNamespace(rest_url=f"http://127.0.0.1:{rest_port}")
    server.wait_ready(
        lambda: (
            httpx.get(f"{model_server.rest_url}/v1/models/{MODEL}", timeout=2).status_code == 200
        )
    )
    gateway_process = ManagedProcess(
        [PYTHON, "-m", "gateway"],
        workdir / "gateway.log",
        env={
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_SERVING_TARGET": f"127.0.0.1:{grpc_port}",
        },
    ).start()
    gateway = SimpleNamespace(url=f"http://127.0.0.1:{gateway_port}")
    gateway_process.wait_ready(
        lambda: httpx.get(f"{gateway.url}/readyz", timeout=2).status_code == 200
    )
    return gateway, model_server, [gateway_process, server]


def drive_traffic(gateway_url: str, seconds: float, threads: int) -> int:
    """Predict one random digit and send its feedback, in a loop; return requests sent."""
    sent = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        rng = np.random.default_rng(index)
        with httpx.Client(base_url=gateway_url, timeout=30) as client:
            while time.monotonic() < deadline:
                image = rng.random((28, 28)).round(3).tolist()
                body = client.post(f"/v1/models/{MODEL}/predict", json={"instances": [image]})
                prediction = body.json()["predictions"][0]
                label = int(rng.integers(0, 10))
                client.post(
                    "/v1/feedback",
                    json={"prediction_id": prediction["prediction_id"], "label": label},
                )
                sent[index] += 2

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(sent)


def own_metrics(url: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus-format /metrics page."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value.split()[0])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY", REPO_ROOT / "model_repository")),
    )
    args = parser.parse_args()
    if not find_binary("PROMETHEUS_BIN", "prometheus") or not find_binary(
        "PUSHGATEWAY_BIN", "prometheus-pushgateway", "pushgateway"
    ):
        raise SystemExit("Prometheus/Pushgateway not installed: run `make monitoring-bins` as root")

    version = ensure_model(args.model_repository)
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        workdir = Path(tmp)
        gateway, model_server, processes = start_stack(workdir, args.model_repository)
        pushgateway = start_pushgateway(workdir)
        processes.append(pushgateway.process)
        try:
            from trainer.metrics import push_training_metrics

            push_training_metrics(pushgateway.url, MODEL, version, 0.9, 0.3, 10.0)
            prometheus = start_prometheus_process(
                workdir / "prometheus", stack_targets(gateway, model_server, pushgateway)
            )
            processes.append(prometheus.process)
            prometheus.wait_for("up == 1", lambda result: len(result) == 3)
            cpu_before = own_metrics(prometheus.url)["process_cpu_seconds_total"]
            evaluations: dict[str, list[float]] = {}
            done = threading.Event()
            sampler = threading.Thread(
                target=sample_rule_groups, args=(prometheus, evaluations, done)
            )
            sampler.start()
            started = time.monotonic()
            requests = drive_traffic(gateway.url, args.seconds, args.threads)
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            time.sleep(2.5)  # let the last scrapes land
            report(prometheus, requests, elapsed, cpu_before, evaluations, f"{int(args.seconds)}s")
        finally:
            for process in reversed(processes):
                process.stop()


def sample_rule_groups(prometheus, evaluations: dict[str, list[float]], done) -> None:
    """Every second, record each rule group's last evaluation time (ms)."""
    while not done.wait(1.0):
        for group in prometheus.api("rules")["groups"]:
            evaluations.setdefault(group["name"], []).append(group["evaluationTime"] * 1000)


def report(
    prometheus,
    requests: int,
    elapsed: float,
    cpu_before: float,
    evaluations: dict[str, list[float]],
    window: str,
) -> None:
    """Print the three tables."""
    print(
        f"\n{requests} requests in {elapsed:.1f} s ({requests / elapsed:.0f}/s), "
        "scrape and evaluation interval 1 s\n"
    )
    print("| target | samples per scrape | scrape p50 (ms) | scrape max (ms) |")
    print("| --- | ---: | ---: | ---: |")
    durations = {}
    for quantile in ("0.5", "1"):
        for sample in prometheus.query(
            f"quantile_over_time({quantile}, scrape_duration_seconds[{window}])"
        ):
            durations[(sample["metric"]["job"], quantile)] = float(sample["value"][1]) * 1000
    for sample in sorted(
        prometheus.query("scrape_samples_scraped"), key=lambda s: s["metric"]["job"]
    ):
        job = sample["metric"]["job"]
        print(
            f"| {job} | {float(sample['value'][1]):.0f} | {durations[(job, '0.5')]:.2f} "
            f"| {durations[(job, '1')]:.2f} |"
        )

    print("\n| rule group | rules | evaluation p50 (ms) | evaluation max (ms) |")
    print("| --- | ---: | ---: | ---: |")
    sizes = {group["name"]: len(group["rules"]) for group in prometheus.api("rules")["groups"]}
    for name, times in evaluations.items():
        print(f"| {name} | {sizes[name]} | {statistics.median(times):.2f} | {max(times):.2f} |")
    total = sum(statistics.median(times) for times in evaluations.values())
    print(f"| **all, per interval** | {sum(sizes.values())} | **{total:.2f}** | |")

    own = own_metrics(prometheus.url)
    cpu = own["process_cpu_seconds_total"] - cpu_before
    print("\n| Prometheus | value |")
    print("| --- | ---: |")
    print(f"| head series | {own['prometheus_tsdb_head_series']:.0f} |")
    print(f"| resident memory (MiB) | {own['process_resident_memory_bytes'] / 2**20:.0f} |")
    print(f"| CPU during the run (% of one core) | {100 * cpu / elapsed:.1f} |")


if __name__ == "__main__":
    main()
