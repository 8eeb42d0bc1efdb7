"""TF Serving's readiness/startup probe script succeeds only when every model has an
AVAILABLE version: run the real script against HTTP servers answering as TF Serving does."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.k8s.manifests import K8S_DIR

SCRIPT = K8S_DIR / "base" / "files" / "model-available.sh"


def version_status(state: str, version: int = 1) -> dict:
    """One entry of TF Serving's GetModelStatus JSON (GET /v1/models/<name>)."""
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": "OK", "error_message": ""},
    }


# TF Serving pretty-prints its JSON, with a space after each colon.
RESPONSES: dict[str, tuple[int, str]] = {
    "/v1/models/ready": (
        200,
        json.dumps({"model_version_status": [version_status("AVAILABLE")]}, indent=1),
    ),
    "/v1/models/loading": (
        200,
        json.dumps({"model_version_status": [version_status("LOADING")]}, indent=1),
    ),
    "/v1/models/rolling": (
        200,
        json.dumps(
            {
                "model_version_status": [
                    version_status("LOADING", 2),
                    version_status("AVAILABLE", 1),
                ]
            },
            indent=1,
        ),
    ),
}
NOT_FOUND = json.dumps({"error": "Could not find any versions of model missing"})


class TFServingStatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = RESPONSES.get(self.path, (404, NOT_FOUND))
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def status_server() -> Iterator[int]:
    """A loopback HTTP server answering model status like TF Serving; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TFServingStatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def run_probe(port: int, models: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"READY_HOST": host, "READY_PORT": str(port), "READY_MODELS": models},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize(
    ("models", "ready"),
    [
        ("ready", True),
        ("rolling", True),  # a new version loading next to an AVAILABLE one
        ("loading", False),  # HTTP 200, but nothing can predict yet
        ("missing", False),  # 404: no version on disk
        ("ready loading", False),  # every configured model must be AVAILABLE
    ],
)
def test_probe_requires_an_available_version(status_server: int, models: str, ready: bool) -> None:
    result = run_probe(status_server, models)
    assert (result.returncode == 0) is ready, result.stdout + result.stderr


def test_probe_fails_when_nothing_listens() -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run_probe(port, "ready").returncode != 0


@pytest.mark.slow
def test_probe_against_the_embedded_model_server(model_server) -> None:
    """The same script accepts a real server with a loaded model, by its REST port."""
    port = urlsplit(model_server.rest_url).port
    assert run_probe(port, "mnist").returncode == 0
    assert run_probe(port, "mnist not-configured").returncode != 0
