"""Benchmark the embedded model server's REST APIs against KServe's Python ModelServer.

Both serve the same SavedModel version: the embedded server as `make up` runs it
(batching on, serving/config/batching.config), KServe through the few lines a KServe user
writes (benchmarks/kserve_mnist.py), in its own virtual environment (.cache/kserve, built
by `make kserve-env`). Debian's wrk drives both with the same one-image body, because a
Python client sharing the 2 cores would saturate before the servers do:

- TF Serving's REST format, `POST /v1/models/mnist:predict` (both servers speak it);
- the Open Inference Protocol, `POST /v2/models/mnist/infer`;

at 8 and 64 connections, in alternating rounds (the server measured first alternates),
reporting the median of the rounds. Also checks, before measuring, that both servers
predict the same classes, and that KServe's own v2 clients work against the embedded
server. Prints markdown tables; compare the ratios, measured side by side.

    python benchmarks/bench_peers.py [--model-dir DIR] [--duration 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import (  # the sibling benchmark's helpers
    MODEL_NAME,
    REPO_ROOT,
    find_model_dir,
    free_port,
    median_figures,
    process_tree_rss,
)

KSERVE_PYTHON = REPO_ROOT / ".cache" / "kserve" / "bin" / "python"
CONNECTIONS = (8, 64)
TARGET_THROUGHPUT_RATIO = 1.5


def bodies(workdir: Path) -> dict[str, Path]:
    """The one-image request bodies, v1 (TF Serving's format) and v2, as files for wrk."""
    import numpy as np

    image = np.random.default_rng(0).random((28, 28)).round(4)
    v1 = {"instances": [image.tolist()]}
    v2 = {
        "inputs": [
            {
                "name": "images",
                "shape": [1, 28, 28],
                "datatype": "FP32",
                "data": image.reshape(-1).tolist(),
            }
        ]
    }
    paths = {}
    for api, body in (("v1", v1), ("v2", v2)):
        path = workdir / f"{api}.json"
        path.write_text(json.dumps(body))
        script = workdir / f"{api}.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{path}", "rb")\n'
            "wrk.body = f:read('*all')\n"
            "f:close()\n"
        )
        paths[api] = script
    return paths


PATHS = {"v1": f"/v1/models/{MODEL_NAME}:predict", "v2": f"/v2/models/{MODEL_NAME}/infer"}


def post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_ready(url: str, body: bytes, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            post(url, body)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def start_embedded(base_path: Path, grpc_port: int, rest_port: int, log: Path):
    """The embedded server with the production batching and monitoring configs."""
    config = REPO_ROOT / "serving" / "config"
    args = [
        sys.executable,
        "-m",
        "serving",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        "--bind_address=127.0.0.1",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base_path}",
        "--file_system_poll_wait_seconds=0",
        "--enable_batching",
        f"--batching_parameters_file={config / 'batching.config'}",
        f"--monitoring_config_file={config / 'monitoring.config'}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SERVING_LOG_LEVEL": "WARNING"}
    with log.open("ab") as handle:
        return subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )


def start_kserve(model_dir: Path, http_port: int, grpc_port: int, log: Path):
    args = [
        str(KSERVE_PYTHON),
        str(REPO_ROOT / "benchmarks" / "kserve_mnist.py"),
        "--model_name",
        MODEL_NAME,
        "--model_dir",
        str(model_dir),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    with log.open("ab") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, script: Path, connections: int, duration: float) -> dict:
    """One wrk run: requests/s, p50 and p99 in ms, and the count of errors."""
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration:.0f}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return float(match[1]) * _UNITS[match[2]]

    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a SavedModel version directory")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    # With 3 rounds the median is one real run, not the mean of two (an outlier moves it).
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 2)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: `make bench-peers` installs it (Debian's wrk) when run as root")
        return 2
    if not KSERVE_PYTHON.exists():
        print(f"{KSERVE_PYTHON} missing: run `make kserve-env`")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        model_dir = find_model_dir(args.model_dir, workdir)
        base_path = workdir / "base" / MODEL_NAME
        base_path.mkdir(parents=True)
        (base_path / "1").symlink_to(model_dir, target_is_directory=True)
        scripts = bodies(workdir)
        ports = {name: (free_port(), free_port()) for name in ("embedded", "kserve")}
        processes = {
            "embedded": start_embedded(base_path, *ports["embedded"], workdir / "embedded.log"),
            "kserve": start_kserve(
                model_dir, ports["kserve"][1], ports["kserve"][0], workdir / "kserve.log"
            ),
        }
        try:
            return measure(args, model_dir, workdir, scripts, ports, processes)
        except Exception:
            for name in processes:
                print(f"--- {name} log ---\n{(workdir / f'{name}.log').read_text()[-3000:]}")
            raise
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()


def measure(args, model_dir, workdir, scripts, ports, processes) -> int:
    base = {name: f"http://127.0.0.1:{ports[name][1]}" for name in ports}
    v1_body = (workdir / "v1.json").read_bytes()
    for name, process in processes.items():
        wait_ready(base[name] + PATHS["v1"], v1_body, process)
    kserve_version = subprocess.run(
        [str(KSERVE_PYTHON), "-c", "import importlib.metadata as m; print(m.version('kserve'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Same model, same answers: checked before anything is timed.
    answers = {
        name: [p["classes"] for p in post(base[name] + PATHS["v1"], v1_body)["predictions"]]
        for name in base
    }
    clients = subprocess.run(
        [
            str(KSERVE_PYTHON),
            str(REPO_ROOT / "benchmarks" / "kserve_clients.py"),
            base["embedded"],
            f"127.0.0.1:{ports['embedded'][0]}",
            MODEL_NAME,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(
        f"model: {model_dir}  cpus: {os.cpu_count()}  kserve {kserve_version}  "
        f"wrk -t2, {args.duration:.0f} s per run, {args.rounds} alternating rounds"
    )
    print(f"classes, embedded vs KServe: {answers['embedded']} vs {answers['kserve']}")
    print(
        f"KServe's v2 clients against the embedded server: {clients.stdout.strip()}"
        f"{clients.stderr.strip()[-500:] if clients.returncode else ''}"
    )
    results: dict[tuple[str, int, str], list[dict]] = {}
    order = ["embedded", "kserve"]
    for round_index in range(max(args.rounds, 2)):
        for api in ("v1", "v2"):
            for connections in CONNECTIONS:
                for name in order if round_index % 2 == 0 else order[::-1]:
                    figures = wrk(base[name] + PATHS[api], scripts[api], connections, args.duration)
                    results.setdefault((api, connections, name), []).append(figures)
                    print(
                        f"  round {round_index + 1} {api} c={connections} {name}: "
                        f"{figures['rps']:,.0f} req/s, p99 {figures['p99']:.1f} ms",
                        flush=True,
                    )
    rss = {name: process_tree_rss(process.pid) for name, process in processes.items()}
    report(results, rss)
    return 0


def report(results: dict, rss: dict[str, int]) -> None:
    print()
    print(
        "| API | connections | embedded req/s | p50 ms | p99 ms | KServe req/s | p50 ms "
        "| p99 ms | throughput ratio | p99 ratio | errors (embedded/KServe) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    verdicts = []
    for api in ("v1", "v2"):
        for connections in CONNECTIONS:
            e = median_figures(results[(api, connections, "embedded")])
            k = median_figures(results[(api, connections, "kserve")])
            errors = f"{e['errors']}/{k['errors']}"
            ratio, p99_ratio = e["rps"] / k["rps"], e["p99"] / k["p99"]
            label = "TF Serving REST (/v1)" if api == "v1" else "Open Inference (/v2)"
            print(
                f"| {label} | {connections} | {e['rps']:,.0f} | {e['p50']:.1f} | {e['p99']:.1f} "
                f"| {k['rps']:,.0f} | {k['p50']:.1f} | {k['p99']:.1f} | {ratio:.2f}x "
                f"| {p99_ratio:.2f}x | {errors} |"
            )
            if api == "v1":
                verdicts.append(
                    (
                        f"REST c={connections} req/s vs KServe",
                        f"{ratio:.2f}x",
                        f">= {TARGET_THROUGHPUT_RATIO}x",
                        ratio >= TARGET_THROUGHPUT_RATIO,
                    )
                )
                if connections == 64:
                    verdicts.append(
                        (
                            "REST c=64 p99 vs KServe",
                            f"{p99_ratio:.2f}x",
                            "<= 1.00x",
                            p99_ratio <= 1.0,
                        )
                    )
    print()
    print("| target | measured | goal | |")
    print("| --- | ---: | ---: | --- |")
    for name, measured, goal, ok in verdicts:
        print(f"| {name} | {measured} | {goal} | {'met' if ok else 'MISSED'} |")
    print()
    print(
        f"RSS after the runs: embedded {rss['embedded'] / 2**20:,.0f} MB, "
        f"KServe {rss['kserve'] / 2**20:,.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
