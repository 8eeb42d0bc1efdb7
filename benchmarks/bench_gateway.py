"""Gateway benchmark: JSON and PNG requests end to end at 8 connections, against the
seed tutorials' Flask + `model.predict` app in the same run; then a burst of large images.

Starts, on free loopback ports: the embedded model server (production batching config)
with the gateway in front of it, and the Flask baseline on the same SavedModel. Drives
each with `benchmarks/http_load.py` (its own process, closed loop, keep-alive), then
prints requests/s, p50/p99, the ratio to the baseline, and the gateway's resident memory.

Observation (issue 17): three more gateways on the same model server, driven in turns
(off, log, shadow, twice) with the JSON body: `off` has the prediction log, drift and
shadow traffic off; `log` logs every prediction with its input (GATEWAY_LOG_SAMPLE=1) and
counts drift; `shadow` adds a 100% shadow copy to the `canary` label (the same version,
so the model server does the work twice). It prints req/s and p99 side by side, the
log's cost against the 10% target, and the disk the log took per million predictions.

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
LOG_COST_TARGET = 0.10  # logging on may cost at most 10% of the requests/s
OBSERVE_KINDS = ("off", "log", "shadow")
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


def write_model_config(path: Path, model_name: str, model_dir: Path, version: int) -> Path:
    """One model, one version, labelled both stable and canary (the shadow's target)."""
    path.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{model_name}"\n    base_path: "{model_dir}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ versions: {version} }} }}\n"
        f'    version_labels {{ key: "stable" value: {version} }}\n'
        f'    version_labels {{ key: "canary" value: {version} }}\n'
        "  }\n}\n"
    )
    return path


def observe_env(kind: str, work: Path) -> dict[str, str]:
    """The settings of the `off`, `log` and `shadow` gateways."""
    if kind == "off":
        return {"GATEWAY_LOG_ENABLED": "false", "GATEWAY_DRIFT_ENABLED": "false"}
    env = {
        "GATEWAY_LOG_ENABLED": "true",
        "GATEWAY_LOG_DIR": str(work / f"prediction-log-{kind}"),
        "GATEWAY_LOG_SAMPLE": "1.0",
        "GATEWAY_DRIFT_ENABLED": "true",
    }
    if kind == "shadow":
        env |= {"GATEWAY_SHADOW_LABEL": "canary", "GATEWAY_SHADOW_PERCENT": "100"}
    return env


def log_disk(log_dir: Path) -> dict:
    """Bytes per prediction record in the log, with and without the input."""
    sizes: dict[bool, list[int]] = {True: [], False: []}
    for path in log_dir.glob("*.ndjson"):
        for line in path.read_bytes().splitlines(keepends=True):
            record = json.loads(line)
            if record.get("type") == "prediction":
                sizes["input" in record].append(len(line))
    with_input = sum(sizes[True]) / max(len(sizes[True]), 1)
    without = sum(sizes[False]) / max(len(sizes[False]), 1)
    if not sizes[False]:  # every input was sampled: the rest of a record is its size less that
        without = with_input - 1048 - len(',"input":""')
    return {"records": len(sizes[True]) + len(sizes[False]), "with": with_input, "without": without}


def observe(start_gateway, predict_path: str, body: tuple[Path, str], work: Path, args) -> dict:
    """Run the JSON load against the off, log and shadow gateways in turns; average."""
    gateways = {kind: start_gateway(kind, observe_env(kind, work)) for kind in OBSERVE_KINDS}
    runs: dict[str, list[dict]] = {kind: [] for kind in OBSERVE_KINDS}
    for _ in range(args.observe_rounds):
        for kind in OBSERVE_KINDS:
            runs[kind].append(load(gateways[kind] + predict_path, *body, args))
    figures = {
        kind: {
            "rps": sum(r["rps"] for r in rows) / len(rows),
            "p50_ms": sum(r["p50_ms"] for r in rows) / len(rows),
            "p99_ms": sum(r["p99_ms"] for r in rows) / len(rows),
            "errors": sum(r["errors"] for r in rows),
        }
        for kind, rows in runs.items()
    }
    figures["disk"] = log_disk(work / "prediction-log-log")
    return figures


def print_observe(figures: dict, args) -> None:
    """The off / log / shadow table, the log's cost and its disk per million predictions."""
    print(
        f"\nobservation: JSON at {args.connections} connections, {args.observe_rounds} turns "
        f"of {args.duration:.0f}s per gateway"
    )
    print(f"| {'gateway':<28} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    names = {
        "off": "log, drift, shadow off",
        "log": "log (sample 1) + drift",
        "shadow": "log + drift + shadow 100%",
    }
    for kind in OBSERVE_KINDS:
        row = figures[kind]
        print(
            f"| {names[kind]:<28} | {row['rps']:>8.1f} | {row['p50_ms']:>7.1f} "
            f"| {row['p99_ms']:>7.1f} | {row['errors']:>6} |"
        )
    cost = 1 - figures["log"]["rps"] / max(figures["off"]["rps"], 1e-9)
    verdict = "met" if cost <= LOG_COST_TARGET else "NOT met"
    print(
        f"logging on costs {cost:.1%} of the requests/s (target <= {LOG_COST_TARGET:.0%}: "
        f"{verdict}); p99 without shadow {figures['log']['p99_ms']:.1f} ms, with a 100% "
        f"shadow {figures['shadow']['p99_ms']:.1f} ms"
    )
    disk = figures["disk"]
    per_million = {
        sample: (sample * disk["with"] + (1 - sample) * disk["without"]) * 1e6 / 1e9
        for sample in (1.0, 0.1, 0.0)
    }
    print(
        f"prediction log: {disk['records']} prediction records, {disk['with']:.0f} B with the "
        f"input, {disk['without']:.0f} B without; per million predictions "
        f"{per_million[1.0]:.2f} GB at GATEWAY_LOG_SAMPLE=1, {per_million[0.1]:.2f} GB at 0.1, "
        f"{per_million[0.0]:.2f} GB at 0 (plus about {disk['with'] / 1e3:.1f} GB per million "
        "labels)"
    )


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
    parser.add_argument("--observe-rounds", type=int, default=2, help="turns per gateway")
    parser.add_argument(
        "--only-observe", action="store_true", help="only the off / log / shadow comparison"
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
    models_config = write_model_config(
        work / "models.config", args.model_name, model_dir, int(version_dir.name)
    )
    try:
        server = ManagedProcess(
            [
                PYTHON, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1",
                f"--model_config_file={models_config}",
                "--enable_batching",
                f"--batching_parameters_file={config / 'batching.config'}",
            ],
            work / "model-server.log",
            env=tf_env,
        ).start()  # fmt: skip
        processes.append(server)
        server.wait_ready(lambda: health_status(f"127.0.0.1:{grpc_port}") == "SERVING", 180)

        def start_gateway(name: str, env: dict[str, str], port: int | None = None) -> str:
            """A gateway on the model server, with the bench's defaults and `env`."""
            port = port or free_port()
            process = ManagedProcess(
                [PYTHON, "-m", "gateway"],
                work / f"gateway-{name}.log",
                env={
                    "GATEWAY_HOST": "127.0.0.1",
                    "GATEWAY_PORT": str(port),
                    "GATEWAY_SERVING_TARGET": f"127.0.0.1:{grpc_port}",
                    "GATEWAY_DEFAULT_MODEL": args.model_name,
                    "GATEWAY_LOG_LEVEL": "warning",
                    "GATEWAY_LOG_DIR": str(work / f"prediction-log-{name}"),
                    **env,
                },
            ).start()
            processes.append(process)
            url = f"http://127.0.0.1:{port}"
            process.wait_ready(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60)
            return url

        model_path = f"/v1/models/{args.model_name}/predict"
        print(
            f"model {model_dir.name}/{version_dir.name}; {args.connections} connections, "
            f"{args.duration:.0f}s per run after {args.warmup:.0f}s warm-up",
            flush=True,
        )
        if args.only_observe:
            print_observe(observe(start_gateway, model_path, bodies["json"], work, args), args)
            return 0
        gateway_url = start_gateway("main", {}, gateway_port)
        gateway = processes[-1]
        predict = f"{gateway_url}{model_path}"
        if not args.only_burst:
            results["gateway json"] = load(predict, *bodies["json"], args)
            results["gateway png"] = load(f"{predict}/image", *bodies["png"], args)
        rss_now, rss_peak = rss_mb(gateway.pid)
        burst_figures = burst(gateway_url, gateway.pid, work, args)
        if args.only_burst:
            print_burst(burst_figures, args)
            return 0
        observed = observe(start_gateway, model_path, bodies["json"], work, args)
        # The model server is not part of the baseline's run: give Flask the machine.
        for process in processes:
            process.stop()

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
    print_observe(observed, args)
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
