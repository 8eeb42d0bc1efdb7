"""What only a real socket shows: slow and idle clients, the connection cap, and how a
failure ends a keep-alive connection. The app runs under uvicorn with the gateway's own
protocol (gateway/server.py) in a thread, over a fake upstream; each exchange is raw
HTTP/1.1 on 127.0.0.1 with a read deadline, so a server that never answers fails the test
instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.fixtures.processes import wait_until
from tests.gateway.fakes import FakeUpstream

READ_DEADLINE = 5.0  # seconds a test waits for an answer the server must give much sooner


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=READ_DEADLINE)
    return sock


def read_answer(sock: socket.socket) -> Answer:
    """Read one response (Content-Length framed); a timeout fails the test."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: recv returns EOF (or a reset) before the deadline."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: test", f"content-length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


# --- 6. slow and idle clients ------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"POST /v1/feedback HTTP/1.1\r\nhost: x\r\n"])
def test_a_client_slow_to_send_its_headers_is_cut_off(serve_app, sockets, sent) -> None:
    url = serve_app(header_timeout_seconds=0.5)
    sock = connect(url)
    sockets.append(sock)
    sock.sendall(sent)
    answer = read_answer(sock)
    assert answer.status == 408
    assert json.loads(answer.body)["error"]["code"] == "request_timeout"
    assert closed_by_server(sock)


def test_a_client_slow_to_send_its_body_gets_a_408(serve_app, sockets) -> None:
    url = serve_app(body_timeout_seconds=0.5)
    sock = connect(url)
    sockets.append(sock)
    head = request("POST", "/v1/feedback", content_type="application/json")
    sock.sendall(head.replace(b"content-length: 0", b"content-length: 1000") + b"[")
    answer = read_answer(sock)
    assert answer.status == 408, answer
    assert "GATEWAY_BODY_TIMEOUT_SECONDS" in json.loads(answer.body)["error"]["message"]
    assert closed_by_server(sock)


def test_connections_over_the_cap_get_a_503_and_the_cap_frees_up(serve_app, sockets) -> None:
    url = serve_app(max_connections=3, header_timeout_seconds=30)
    idle = [connect(url) for _ in range(3)]
    sockets.extend(idle)
    answers: list[Answer] = []

    def over_cap_answer() -> Answer:
        sock = connect(url)
        sockets.append(sock)
        sock.sendall(request("GET", "/healthz"))
        answers.append(read_answer(sock))
        return answers[-1]

    # The server accepts connections asynchronously: poll until the idle three count.
    wait_until(lambda: over_cap_answer().status == 503, 5, 0.05, "the cap to be reached")
    refused = answers[-1]
    assert refused.headers["retry-after"]
    assert json.loads(refused.body)["error"]["code"] == "overloaded"
    for sock in idle:
        sock.close()
    wait_until(lambda: over_cap_answer().status == 200, 10, 0.1, "a free connection slot")


# --- 7. an unexpected error still ends the exchange cleanly --------------------------------------


def test_an_unexpected_error_answers_in_the_error_shape_and_announces_the_close(
    serve_app, sockets
) -> None:
    upstream = FakeUpstream()
    upstream.error = RuntimeError("a bug")
    url = serve_app(upstream)
    sock = connect(url)
    sockets.append(sock)
    body = json.dumps({"instances": [[[0.0] * 28] * 28]}).encode()
    sock.sendall(request("POST", "/v1/models/mnist/predict", body, content_type="application/json"))
    answer = read_answer(sock)
    assert answer.status == 500
    assert json.loads(answer.body)["error"]["code"] == "internal"
    # A client reusing the connection must be told it is over, not reset on its next request.
    assert answer.headers.get("connection") == "close"
    assert closed_by_server(sock)


def test_an_answer_sent_before_the_body_arrived_ends_the_connection(serve_app, sockets) -> None:
    url = serve_app(api_keys="key-one")
    sock = connect(url)
    sockets.append(sock)
    head = request("POST", "/v1/feedback", content_type="application/json")
    sock.sendall(head.replace(b"content-length: 0", b"content-length: 100000"))
    answer = read_answer(sock)
    assert answer.status == 401
    assert closed_by_server(sock), "the rest of an unread body must not hold the connection"
