"""Assembles the controller from its settings and runs its loop (`rollout run`).

The loop ticks every ROLLOUT_INTERVAL_SECONDS, acting only while it holds the leader
lease when leader election is on, and serves `/metrics` and `/healthz` on
ROLLOUT_METRICS_PORT. SIGTERM ends it after the current pass.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rollout.analysis import REQUIRED_RECORDS
from rollout.audit import AuditLog
from rollout.config import Settings
from rollout.controller import Controller
from rollout.errors import RolloutError
from rollout.metrics import RolloutMetrics
from rollout.model_config import FileModelConfigStore, ModelConfigStore
from rollout.policy import load_policies
from rollout.queries import Prometheus, RecordingRules
from rollout.record import RecordStore
from rollout.serving_client import ServingClient

log = logging.getLogger("rollout")


def build_store(settings: Settings) -> ModelConfigStore:
    """The config store the settings name (the ConfigMap one seeds itself if missing)."""
    if settings.config_store == "file":
        return FileModelConfigStore(settings.config_path)
    from rollout.kube import ConfigMapModelConfigStore, ensure_model_config

    store = ConfigMapModelConfigStore(
        settings.namespace, name=settings.configmap_name, key=settings.configmap_key
    )
    if settings.configmap_seed is not None:
        ensure_model_config(store, settings.configmap_seed.read_text())
    return store


def build_controller(settings: Settings, metrics: RolloutMetrics | None = None) -> Controller:
    """A controller wired to the world the settings describe."""
    records = None
    if settings.redis_url is not None:
        records = RecordStore(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
    return Controller(
        settings,
        load_policies(settings.policies_dir),
        build_store(settings),
        ServingClient(settings.serving_target, settings.serving_timeout_seconds),
        records,
        Prometheus(settings.prometheus_url, settings.prometheus_timeout_seconds),
        RecordingRules(settings.rules_dir, REQUIRED_RECORDS),
        AuditLog(settings.audit_log),
        metrics,
    )


class _Handler(BaseHTTPRequestHandler):
    metrics: RolloutMetrics
    stale_after: float

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, status, kind = generate_latest(self.metrics.registry), 200, CONTENT_TYPE_LATEST
        elif self.path.startswith("/healthz"):
            # Alive while the loop turns; a loop stuck for several intervals is restarted.
            last = self.metrics.last_tick._value.get()
            healthy = last == 0 or time.time() - last < self.stale_after
            body, status, kind = (
                (b"ok\n" if healthy else b"stalled\n"),
                200 if healthy else 503,
                "text/plain",
            )
        else:
            body, status, kind = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every few seconds are not news
        return


def serve_metrics(settings: Settings, metrics: RolloutMetrics) -> ThreadingHTTPServer:
    """Start `/metrics` and `/healthz` in a daemon thread."""
    handler = type(
        "Handler",
        (_Handler,),
        {"metrics": metrics, "stale_after": 5 * settings.interval_seconds + 60},
    )
    server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def run(settings: Settings) -> int:
    """Run the control loop until SIGTERM/SIGINT."""
    metrics = RolloutMetrics()
    controller = build_controller(settings, metrics)
    elector = None
    if settings.leader_election:
        from rollout.kube import LeaseLeaderElector

        elector = LeaseLeaderElector(
            settings.namespace, name=settings.lease_name, identity=settings.pod_name or None
        )
    server = serve_metrics(settings, metrics) if settings.metrics_port else None
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    log.info(
        "rollout controller: models %s, every %ss",
        sorted(controller.policies),
        settings.interval_seconds,
    )
    try:
        while not stopping.is_set():
            leading = elector is None or elector.try_acquire_or_renew()
            if not leading:
                # Another controller acts now: what this one could not write is stale.
                controller.forget_unsaved()
            if leading:
                try:
                    controller.tick()
                except RolloutError as error:
                    # The config or Redis failed mid-pass: nothing half-done is published
                    # as done, and the next pass starts again from the stored state.
                    log.error("pass failed: %s", error)
                except Exception:
                    # A bug must not stop the loop that rolls bad versions back: log it,
                    # count it, try again next interval (/healthz turns 503 if no pass ends).
                    log.exception("pass failed unexpectedly")
                    metrics.tick_errors.labels("", "internal").inc()
            stopping.wait(settings.interval_seconds)
    finally:
        if elector is not None:
            elector.release()
        controller.serving.close()
        if controller.records is not None:
            controller.records.close()
        if server is not None:
            server.shutdown()
    return 0
