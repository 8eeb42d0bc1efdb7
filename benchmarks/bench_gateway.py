"""Gateway benchmark: JSON and PNG requests end to end at 8 connections, against the
seed tutorials' Flask + `model.predict` app in the same run; then a burst of large images.

Starts, on free loopback ports: the embedded model server (production batching config)
with the gateway in front of it, and the Flask baseline on the same SavedModel. Drives
each with `benchmarks/http_load.py` (its own process, closed loop, keep-alive), then
prints requests/s, p50/p99, the ratio to the baseline, and the gateway's resident memory.

The burst (issue 15): 8 connections upload images at the largest accepted size (4 MP) as
small files, all-white WebP and transparent RGBA PNG with one stroke, while /healthz is
probed every 20 ms; it reports the gateway's peak RSS, its RSS after, and /healthz's
p50/p99 during the burst beside the same probe on the idle gateway.

    make bench-gateway            # or: python benchmarks/bench_gateway.py --duration 15
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.processes import PYTHON, ManagedProcess, free_port  # noqa: E402
from tests.fixtures.serving import health_status  # noqa: E402

TARGETS = {"json": 50.0, "png": 40.0}  # x the baseline's requests/s
P99_TARGET_MS = 20.0
RSS_TARGET_MB = 150.0
HEALTHZ_P99_TARGET_MS = 50.0  # during the burst
RSS_AFTER_BURST_TARGET_MB = 200.0
BURST_SIDE = 2000  # 2000 x 2000: the default GATEWAY_MAX_IMAGE_PIXELS
PROBE_INTERVAL = 0.02


def latest_version(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise SystemExit(f"no model in {model_dir}: run `make train` first")
    versions = sorted(
        (p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise SystemExit(f"no model version in {model_dir}: run `make train` first")
    return versions[-1]


def sample_bodies(work: Path) -> dict[str, tuple[Path, str]]:
    """One real MNIST digit as a JSON instance (4 decimals) and as a 28x28 PNG."""
    from trainer.data import load_offline

    image = load_offline().x_train[0].reshape(28, 28).astype(np.uint8)
    json_body = work / "digit.json"
    json_body.write_text(json.dumps({"instances": [(image / 255.0).round(4).tolist()]}))
    png_body = work / "digit.png"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    png_body.write_bytes(buffer.getvalue())
    return {"json": (json_body, "application/json"), "png": (png_body, "image/png")}


def load(url: str, body: Path, content_type: str, args) -> dict:
    output = subprocess.run(
        [
            PYTHON,
            str(REPO_ROOT / "benchmarks" / "http_load.py"),
            url,
            f"--body-file={body}",
            f"--content-type={content_type}",
            f"--connections={args.connections}",
            f"--duration={args.duration}",
            f"--warmup={args.warmup}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def probe_healthz(url: str, seconds: float) -> list[float]:
    """GET /healthz every 20 ms for `seconds`, on one keep-alive connection; latencies ms."""
    latencies = []
    deadline = time.perf_counter() + seconds
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            client.get(f"{url}/healthz").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(PROBE_INTERVAL)
    return latencies


def burst(gateway_url: str, pid: int, work: Path, args) -> dict:
    """Large-image uploads on 8 connections while /healthz is probed and RSS sampled."""
    from tests.gateway.images import transparent_png, white_webp

    bodies = []
    for name, data, content_type in (
        ("burst.webp", white_webp(BURST_SIDE), "image/webp"),
        ("burst.png", transparent_png(BURST_SIDE), "image/png"),
    ):
        (work / name).write_bytes(data)
        bodies.append((work / name, content_type, len(data)))
    idle = probe_healthz(gateway_url, args.burst_duration / 2)
    rss_samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss_samples.append(rss_mb(pid)[0])
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    image_url = f"{gateway_url}/v1/models/{args.model_name}/predict/image"
    loads = [
        subprocess.Popen(
            [
                PYTHON, str(REPO_ROOT / "benchmarks" / "http_load.py"), image_url,
                f"--body-file={path}", f"--content-type={content_type}",
                f"--connections={args.connections // 2}", f"--duration={args.burst_duration}",
                "--warmup=0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for path, content_type, _ in bodies
    ]  # fmt: skip
    during = probe_healthz(gateway_url, args.burst_duration)
    results = [json.loads(load.communicate()[0].strip().splitlines()[-1]) for load in loads]
    stop.set()
    sampler.join()
    time.sleep(1.0)  # let the last decodes finish and the pool trim
    return {
        "file_kb": [round(size / 1024) for _, _, size in bodies],
        "uploads": sum(r["requests"] for r in results),
        "uploads_per_s": sum(r["rps"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_kinds": sorted({kind for r in results for kind in r["error_kinds"]}),
        "idle_p50": percentile(idle, 0.5),
        "idle_p99": percentile(idle, 0.99),
        "burst_p50": percentile(during, 0.5),
        "burst_p99": percentile(during, 0.99),
        "burst_max": max(during),
        "rss_before": rss_samples[0],
        "rss_peak": max(rss_samples),
        "rss_after": rss_mb(pid)[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY", "model_repository")),
    )
    parser.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "mnist"))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--burst-duration", type=float, default=10.0)
    parser.add_argument(
        "--only-burst", action="store_true", help="skip the JSON/PNG runs and the baseline"
    )
    args = parser.parse_args(argv)

    model_dir = (args.model_repository / args.model_name).resolve()
    version_dir = latest_version(model_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    bodies = sample_bodies(work)
    config = REPO_ROOT / "serving" / "config"
    grpc_port, rest_port, gateway_port, flask_port = (free_port() for _ in range(4))
    tf_env = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    processes: list[ManagedProcess] = []
    results: dict[str, dict] = {}
    try:
        server = ManagedProcess(
            [
                PYTHON, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1", f"--model_name={args.model_name}",
                f"--model_base_path={model_dir}", "--enable_batching",
                f"--batching_parameters_file={config / 'batching.config'}",
            ],
            work / "model-server.log",
            env=tf_env,
        ).start()  # fmt: skip
        processes.append(server)
        server.wait_ready(lambda: health_status(f"127.0.0.1:{grpc_port}") == "SERVING", 180)
        gateway = ManagedProcess(
            [PYTHON, "-m", "gateway"],
            work / "gateway.log",
            env={
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(gateway_port),
                "GATEWAY_SERVING_TARGET": f"127.0.0.1:{grpc_port}",
                "GATEWAY_DEFAULT_MODEL": args.model_name,
                "GATEWAY_LOG_LEVEL": "warning",
            },
        ).start()
        processes.append(gateway)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        gateway.wait_ready(lambda: httpx.get(f"{gateway_url}/readyz").status_code == 200, 60)
        predict = f"{gateway_url}/v1/models/{args.model_name}/predict"
        print(
            f"model {model_dir.name}/{version_dir.name}; {args.connections} connections, "
            f"{args.duration:.0f}s per run after {args.warmup:.0f}s warm-up",
            flush=True,
        )
        if not args.only_burst:
            results["gateway json"] = load(predict, *bodies["json"], args)
            results["gateway png"] = load(f"{predict}/image", *bodies["png"], args)
        rss_now, rss_peak = rss_mb(gateway.pid)
        burst_figures = burst(gateway_url, gateway.pid, work, args)
        if args.only_burst:
            print_burst(burst_figures, args)
            return 0
        # The model server is not part of the baseline's run: give Flask the machine.
        gateway.stop()
        server.stop()

        flask = ManagedProcess(
            [PYTHON, str(REPO_ROOT / "benchmarks" / "flask_baseline.py"),
             f"--model-dir={version_dir}", f"--port={flask_port}"],
            work / "flask.log",
            env=tf_env,
        ).start()  # fmt: skip
        processes.append(flask)
        flask_url = f"http://127.0.0.1:{flask_port}"
        flask.wait_ready(lambda: httpx.get(f"{flask_url}/healthz").status_code == 200, 180)
        results["flask json"] = load(f"{flask_url}/predict", *bodies["json"], args)
        results["flask png"] = load(f"{flask_url}/predict/image", *bodies["png"], args)
    finally:
        for process in reversed(processes):
            process.stop()

    print()
    print(f"| {'run':<13} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} "
          f"| {'x baseline':>10} | target |")  # fmt: skip
    print(f"|{'-' * 15}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 12}|{'-' * 8}|")
    for kind in ("json", "png"):
        for who in ("flask", "gateway"):
            row = results[f"{who} {kind}"]
            ratio = row["rps"] / max(results[f"flask {kind}"]["rps"], 1e-9)
            target = ""
            if who == "gateway":
                target = f">={TARGETS[kind]:.0f}x" + (
                    f", p99<={P99_TARGET_MS:.0f}" if kind == "json" else ""
                )
            print(
                f"| {who + ' ' + kind:<13} | {row['rps']:>8.1f} | {row['p50_ms']:>7.1f} "
                f"| {row['p99_ms']:>7.1f} | {row['errors']:>6} | {ratio:>9.1f}x | {target:<6} |"
            )
    print(f"\ngateway resident memory: {rss_now:.0f} MB now, {rss_peak:.0f} MB peak "
          f"(target <= {RSS_TARGET_MB:.0f} MB)")  # fmt: skip
    print_burst(burst_figures, args)
    print(f"load average (1/5 min): {' '.join(Path('/proc/loadavg').read_text().split()[:2])} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"logs: {work}")
    return 0


def print_burst(b: dict, args) -> None:
    """The burst's figures: uploads, /healthz idle and during, the gateway's RSS."""
    print(
        f"\nburst: {args.connections} connections, {args.burst_duration:.0f}s of "
        f"{BURST_SIDE}x{BURST_SIDE} uploads (WebP {b['file_kb'][0]} KB, RGBA PNG "
        f"{b['file_kb'][1]} KB): {b['uploads']} answered 200 ({b['uploads_per_s']:.1f}/s), "
        f"{b['errors']} other {b['error_kinds']}"
    )
    print(f"| {'/healthz':<13} | {'p50 ms':>7} | {'p99 ms':>7} | target |")
    print(f"|{'-' * 15}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    print(f"| {'idle':<13} | {b['idle_p50']:>7.1f} | {b['idle_p99']:>7.1f} |        |")
    print(
        f"| {'during burst':<13} | {b['burst_p50']:>7.1f} | {b['burst_p99']:>7.1f} "
        f"| <={HEALTHZ_P99_TARGET_MS:.0f}  |"
    )
    print(
        f"gateway RSS in the burst: {b['rss_before']:.0f} MB before, {b['rss_peak']:.0f} MB peak, "
        f"{b['rss_after']:.0f} MB after (target after <= {RSS_AFTER_BURST_TARGET_MB:.0f} MB)"
    )


if __name__ == "__main__":
    sys.exit(main())
