"""The local stack: start, stop and inspect its processes (`make up`, `make down`).

Every service is a background process whose log (`<name>.log`) and pid (`<name>.pid`)
live in one run directory. `up` starts the services in order, waits for each to be ready
by polling, and prints the URLs; `down` stops them in reverse order.

Redis starts first when `redis-server` is installed (`make redis-bin`), and the gateway
then records scored feedback there; without it the gateway falls back to its in-process
record and says so. The model server serves from `.run/models.config`, which the rollout
controller (`python -m rollout`, started last) owns: it moves new versions through shadow
and canary to stable. To add a service (Prometheus, the Pushgateway...), append a
`Service` to `services()`;
give it `required=False` and an `available` check so `up` skips it when its binary is
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class StackConfig:
    """Where things live and which ports they use."""

    run_dir: Path
    model_repository: Path
    model_name: str = "mnist"
    grpc_port: int = 8500
    rest_port: int = 8501
    gateway_port: int = 8080
    # monitoring/prometheus.yml scrapes the default ports above and the Pushgateway's.
    prometheus_port: int = 9090
    pushgateway_port: int = 9091
    redis_port: int = 6379
    rollout_metrics_port: int = 9102
    timeout: float = 180.0
    # The gateway's prediction log (GATEWAY_LOG_DIR).
    log_dir: Path = REPO_ROOT / "prediction_log"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def serving_rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


@dataclass
class Service:
    """One background process of the stack."""

    name: str
    args: list[str]
    ready: Callable[[], bool]
    urls: list[str]
    # A string that must appear in /proc/<pid>/cmdline: guards against a recycled pid.
    marker: str
    # Called when the service starts (not when `status` or `down` list services).
    env: Callable[[], dict[str, str]] = dict
    required: bool = True
    available: Callable[[], bool] = lambda: True
    # Run once the service is ready (e.g. seed it with data that predates it).
    on_ready: Callable[[], None] | None = None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def model_available(config: StackConfig) -> bool:
    """TF Serving's REST status says some version of the model is AVAILABLE."""
    url = f"{config.serving_rest_url}/v1/models/{config.model_name}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            states = json.load(response).get("model_version_status", [])
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(state.get("state") == "AVAILABLE" for state in states)


def feedback_secret(run_dir: Path) -> str:
    """A random secret kept in the run directory, so ids stay valid across restarts.

    Created by `up` when the gateway starts; listing services never writes it.
    """
    path = run_dir / "feedback_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def redis_answers(port: int) -> bool:
    """Redis answers PING on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_service(config: StackConfig) -> Service:
    """Debian's redis-server, in memory only: the gateways' record of scored feedback."""
    binary = shutil.which("redis-server")
    # No snapshots, no append-only file: the record lives as long as the stack.
    options = {"port": config.redis_port, "bind": "127.0.0.1", "save": "", "appendonly": "no"}
    args = [binary or "redis-server", "--dir", str(config.run_dir)]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    return Service(
        name="redis",
        args=args,
        ready=lambda: redis_answers(config.redis_port),
        urls=[f"redis               redis://127.0.0.1:{config.redis_port}/0  (feedback dedup)"],
        marker="redis-server",
        required=False,
        available=lambda: binary is not None,
    )


def rollout_env(config: StackConfig) -> dict[str, str]:
    """The rollout controller's settings: it owns the model server's config file."""
    env = {
        "ROLLOUT_CONFIG_PATH": str(config.run_dir / "models.config"),
        "ROLLOUT_MODEL_REPOSITORY": str(config.model_repository.resolve()),
        "ROLLOUT_SERVING_TARGET": f"127.0.0.1:{config.grpc_port}",
        "ROLLOUT_PROMETHEUS_URL": f"http://127.0.0.1:{config.prometheus_port}",
        "ROLLOUT_AUDIT_LOG": str(config.run_dir / "rollout-audit.jsonl"),
        "ROLLOUT_METRICS_HOST": "127.0.0.1",
        "ROLLOUT_METRICS_PORT": str(config.rollout_metrics_port),
    }
    if redis_answers(config.redis_port):
        env["ROLLOUT_REDIS_URL"] = f"redis://127.0.0.1:{config.redis_port}/0"
    return env


def write_model_config(config: StackConfig) -> None:
    """The model server serves from the controller's config: write it before the server
    starts (each model's newest version stable), or keep the one a previous run left."""
    subprocess.run(
        [PYTHON, "-m", "rollout", "init-config"],
        env={**os.environ, **rollout_env(config)},
        cwd=REPO_ROOT,
        check=True,
    )


def gateway_env(config: StackConfig, redis: Service) -> dict[str, str]:
    """The gateway's settings; Redis when it runs, else the per-process fallback."""
    env = {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(config.gateway_port),
        "GATEWAY_SERVING_TARGET": f"127.0.0.1:{config.grpc_port}",
        "GATEWAY_DEFAULT_MODEL": config.model_name,
        "GATEWAY_ENV": "development",
        "GATEWAY_FEEDBACK_SECRET": feedback_secret(config.run_dir),
        "GATEWAY_LOG_DIR": str(config.log_dir),
    }
    if running_pid(config, redis) is not None:
        env["GATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{config.redis_port}/0"
    # Prometheus starts after the gateway; the web page's online accuracy is read from it
    # per request, so it only has to be there by then.
    if shutil.which("prometheus"):
        env["GATEWAY_PROMETHEUS_URL"] = f"http://127.0.0.1:{config.prometheus_port}"
    return env


def services(config: StackConfig) -> list[Service]:
    """The stack, in start order."""
    serving_config = REPO_ROOT / "serving" / "config"
    model_server_args = [
        PYTHON,
        "-m",
        "serving",
        f"--port={config.grpc_port}",
        f"--rest_api_port={config.rest_port}",
        "--bind_address=127.0.0.1",
        # The rollout controller's file: it moves labels and versions by rewriting it, and
        # also asks for a reload at once (HandleReloadConfigRequest).
        f"--model_config_file={config.run_dir / 'models.config'}",
        "--model_config_file_poll_wait_seconds=2",
    ]
    if (serving_config / "batching.config").exists():
        model_server_args += [
            "--enable_batching",
            f"--batching_parameters_file={serving_config / 'batching.config'}",
        ]
    if (serving_config / "monitoring.config").exists():
        model_server_args.append(f"--monitoring_config_file={serving_config / 'monitoring.config'}")
    redis = redis_service(config)
    return [
        redis,
        Service(
            name="model-server",
            args=model_server_args,
            env=lambda: {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
            ready=lambda: model_available(config),
            urls=[
                f"model server gRPC   127.0.0.1:{config.grpc_port}",
                f"model server REST   {config.serving_rest_url}/v1/models/{config.model_name}",
                f"model server metrics {config.serving_rest_url}/monitoring/prometheus/metrics",
            ],
            marker="-m serving",
        ),
        Service(
            name="gateway",
            args=[PYTHON, "-m", "gateway"],
            env=lambda: gateway_env(config, redis),
            ready=lambda: http_ok(f"{config.gateway_url}/readyz"),
            urls=[
                f"web page            {config.gateway_url}/  (draw or upload a digit)",
                f"gateway             {config.gateway_url}  (API docs: {config.gateway_url}/docs)",
                f"gateway metrics     {config.gateway_url}/metrics",
            ],
            marker="-m gateway",
        ),
        *monitoring_services(config),
        Service(
            name="rollout",
            args=[PYTHON, "-m", "rollout", "run"],
            env=lambda: rollout_env(config),
            ready=lambda: http_ok(f"http://127.0.0.1:{config.rollout_metrics_port}/healthz"),
            urls=[
                f"rollout controller  http://127.0.0.1:{config.rollout_metrics_port}/metrics  "
                "(python -m rollout status)",
            ],
            marker="-m rollout",
        ),
    ]


def monitoring_services(config: StackConfig) -> list[Service]:
    """Pushgateway and Prometheus (Debian's binaries), optional: skipped when not installed."""
    pushgateway_bin = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    prometheus_bin = shutil.which("prometheus")
    pushgateway = f"127.0.0.1:{config.pushgateway_port}"
    prometheus = f"http://127.0.0.1:{config.prometheus_port}"
    return [
        Service(
            name="pushgateway",
            args=[
                pushgateway_bin or "prometheus-pushgateway",
                f"--web.listen-address={pushgateway}",
                # Pushed trainer metrics survive a restart of the stack.
                f"--persistence.file={config.run_dir / 'pushgateway.data'}",
            ],
            ready=lambda: http_ok(f"http://{pushgateway}/-/ready"),
            urls=[f"pushgateway         http://{pushgateway}  (PUSHGATEWAY_URL for the trainer)"],
            marker="pushgateway",
            required=False,
            available=lambda: pushgateway_bin is not None,
            on_ready=lambda: push_offline_metrics(config, f"http://{pushgateway}"),
        ),
        Service(
            name="prometheus",
            args=[
                prometheus_bin or "prometheus",
                f"--config.file={REPO_ROOT / 'monitoring' / 'prometheus.yml'}",
                f"--storage.tsdb.path={config.run_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{config.prometheus_port}",
            ],
            ready=lambda: http_ok(f"{prometheus}/-/ready"),
            urls=[f"prometheus          {prometheus}  (alerts: {prometheus}/alerts)"],
            marker="storage.tsdb.path",
            required=False,
            available=lambda: prometheus_bin is not None,
        ),
    ]


def push_offline_metrics(config: StackConfig, pushgateway_url: str) -> None:
    """Versions trained before the Pushgateway ran (make demo's first model) get their
    recorded offline accuracy pushed, so the online-vs-offline rules have both sides."""
    sys.path.insert(0, str(REPO_ROOT))
    from trainer.metrics import push_recorded_metrics

    pushed = push_recorded_metrics(pushgateway_url, config.model_repository)
    print(f"  pushgateway: pushed the recorded metrics of {pushed} version(s)")


def pid_path(config: StackConfig, service: Service) -> Path:
    return config.run_dir / f"{service.name}.pid"


def running_pid(config: StackConfig, service: Service) -> int | None:
    """The service's pid if its pid file names a live process that is really it."""
    path = pid_path(config, service)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (ValueError, OSError):
        return None
    return pid if service.marker in cmdline else None


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start(config: StackConfig, service: Service) -> subprocess.Popen | None:
    """Start one service in its own session (so `down` can stop its whole group)."""
    if running_pid(config, service) is not None:
        print(f"  {service.name}: already running (pid {running_pid(config, service)})")
        return None
    log_path = config.run_dir / f"{service.name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            service.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **service.env()},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    pid_path(config, service).write_text(str(process.pid))
    print(f"  {service.name}: started (pid {process.pid}, log {log_path})")
    return process


def wait_ready(config: StackConfig, service: Service, process: subprocess.Popen | None) -> bool:
    """Poll the service's readiness until the deadline or until it dies."""
    deadline = time.monotonic() + config.timeout
    while time.monotonic() < deadline:
        if service.ready():
            return True
        if process is not None and process.poll() is not None:
            print(f"  {service.name}: exited with {process.returncode}")
            return False
        time.sleep(0.25)
    print(f"  {service.name}: not ready after {config.timeout:.0f}s")
    return False


def stop(config: StackConfig, service: Service, grace: float = 15.0) -> None:
    """SIGTERM the service's process group, then SIGKILL after `grace` seconds."""
    pid = running_pid(config, service)
    if pid is None:
        pid_path(config, service).unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if not _alive(pid):
            break
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_path(config, service).unlink(missing_ok=True)
    print(f"  {service.name}: stopped (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def has_model(config: StackConfig) -> bool:
    model_dir = config.model_repository / config.model_name
    return model_dir.is_dir() and any(p.name.isdigit() for p in model_dir.iterdir())


def up(config: StackConfig) -> int:
    """Start every available service, wait for each, print the URLs."""
    if not has_model(config):
        print(
            f"no model in {config.model_repository / config.model_name}: train one first "
            "(make train, or make demo which trains when the repository is empty)"
        )
        return 1
    config.run_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the stack (logs and pids in {config.run_dir})")
    started = []
    for service in services(config):
        if not service.available():
            print(f"  {service.name}: skipped (not installed)")
            continue
        if service.name == "model-server":
            write_model_config(config)
        process = start(config, service)
        if not wait_ready(config, service, process):
            print(f"--- {service.name} log ---\n{log_tail(config.run_dir / f'{service.name}.log')}")
            if service.required:
                for earlier in reversed([*started, service]):
                    stop(config, earlier)
                return 1
            continue
        if service.on_ready is not None:
            service.on_ready()
        started.append(service)
    print("\nready:")
    for service in started:
        for url in service.urls:
            print(f"  {url}")
    print("\nstop with: make down")
    return 0


def down(config: StackConfig) -> int:
    """Stop every service that has a pid file, in reverse start order."""
    if not config.run_dir.exists():
        print("nothing to stop")
        return 0
    for service in reversed(services(config)):
        stop(config, service)
    return 0


def status(config: StackConfig) -> int:
    """Print each service's pid and readiness; exit 1 if any required one is down."""
    healthy = True
    for service in services(config):
        pid = running_pid(config, service)
        ready = pid is not None and service.ready()
        healthy &= ready or not service.required
        print(f"  {service.name:14} {'ready' if ready else 'down':6} pid={pid or '-'}")
    return 0 if healthy else 1


def parse_args(argv: list[str] | None = None) -> tuple[str, StackConfig]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("RUN_DIR", ".run")))
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY", "model_repository")),
    )
    parser.add_argument("--model-name", default=os.environ.get("MODEL_NAME", "mnist"))
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--pushgateway-port", type=int, default=9091)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--rollout-metrics-port", type=int, default=9102)
    parser.add_argument("--timeout", type=float, default=180.0, help="per-service readiness")
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=Path(os.environ.get("GATEWAY_LOG_DIR", "prediction_log")),
        help="the gateway's prediction log",
    )
    args = parser.parse_args(argv)
    return args.command, StackConfig(
        run_dir=args.run_dir.resolve(),
        model_repository=args.model_repository.resolve(),
        model_name=args.model_name,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        gateway_port=args.gateway_port,
        prometheus_port=args.prometheus_port,
        pushgateway_port=args.pushgateway_port,
        redis_port=args.redis_port,
        rollout_metrics_port=args.rollout_metrics_port,
        timeout=args.timeout,
        log_dir=args.log_dir.resolve(),
    )


def main(argv: list[str] | None = None) -> int:
    command, config = parse_args(argv)
    return {"up": up, "down": down, "status": status}[command](config)


if __name__ == "__main__":
    sys.exit(main())
