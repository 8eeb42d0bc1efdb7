"""Benchmark `trainer train --distributed`: 2 workers against 1, on this machine.

Three runs of the same job (MLP, offline sample, same seed, same global batch, a fixed
number of epochs): one plain process, one MultiWorkerMirroredStrategy worker, and two
workers on localhost. Each row is real processes; fit s is the chief's training time
from the version's metadata, CPU s the children's user+system time. Prints a markdown
table.

    python benchmarks/bench_distributed.py [--model mlp] [--epochs 10] [--global-batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(workers: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Train once with `workers` processes (0: no strategy at all); return the figures."""
    repository = workdir / f"repo-{workers}"
    per_worker = args.global_batch // max(workers, 1)
    command = [
        sys.executable, "-m", "trainer", "train", "--model", args.model, "--dataset", "offline",
        "--seed", str(args.seed), "--epochs", str(args.epochs), "--patience", "1000",
        "--batch-size", str(per_worker), "--model-repository", str(repository),
        "--output-dir", str(workdir / "runs"), "--min-accuracy", "0", "--max-regression", "1",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PUSHGATEWAY_URL", None)
    ports = [free_port() for _ in range(workers)]
    cpu_before, started = children_cpu(), time.perf_counter()
    if workers == 0:
        processes = [subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE)]
    else:
        processes = []
        for index in range(workers):
            tf_config = {
                "cluster": {"worker": [f"localhost:{port}" for port in ports]},
                "task": {"type": "worker", "index": index},
            }
            processes.append(
                subprocess.Popen(
                    [*command, "--distributed"],
                    env={**env, "TF_CONFIG": json.dumps(tf_config)},
                    cwd=REPO_ROOT,
                    stdout=subprocess.PIPE,
                )
            )
    for process in processes:
        process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{workers} worker(s): a process failed ({process.returncode})")
    wall = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    version_dir = repository / "mnist" / "1"
    metadata = json.loads((version_dir / "assets.extra" / "metadata.json").read_text())
    return {
        "setup": "plain process" if workers == 0 else f"{workers} worker(s), MWMS",
        "per_worker_batch": per_worker,
        "accuracy": metadata["metrics"]["accuracy"],
        "fit_s": metadata["training"]["train_seconds"],
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        rows = [run(workers, args, Path(tmp)) for workers in (0, 1, 2)]
    print(
        f"\n{args.model}, offline sample, {args.epochs} epochs, global batch {args.global_batch}, "
        f"seed {args.seed}; {os.cpu_count()} CPUs, 1-min load {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after\n"
    )
    print("| setup | batch per worker | test accuracy | fit s (chief) | wall s | CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['setup']} | {row['per_worker_batch']} | {row['accuracy']:.4f} | "
            f"{row['fit_s']:.1f} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} |"
        )
    one, two = rows[1], rows[2]
    print(f"\n2 workers vs 1: fit {two['fit_s'] / one['fit_s']:.2f}x the time")


if __name__ == "__main__":
    main()
