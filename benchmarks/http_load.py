"""A minimal closed-loop HTTP/1.1 load generator: N keep-alive connections, one request
in flight on each, for a fixed duration.

Written on raw asyncio streams rather than an HTTP client library so that the client's
own CPU cost (on a 2-core machine shared with the servers it measures) stays small.
Run as a process: `python benchmarks/http_load.py URL --body-file F --content-type T`;
prints one JSON line with the request count, errors and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def build_request(url: str, body: bytes, content_type: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, whether the server will close the connection)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    length, close = None, status_line.startswith(b"HTTP/1.0")
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
    if length is None:
        await reader.read()
        close = True
    else:
        await reader.readexactly(length)
    return int(status_line.split()[1]), close


async def worker(host, port, request, start_at, stop_at, latencies, errors) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status, close = await read_response(reader)
            finished = time.perf_counter()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            errors.append("connection")
            writer = None
            await asyncio.sleep(0.01)
            continue
        if started >= start_at:  # the warm-up is not counted
            if status == 200:
                latencies.append(finished - started)
            else:
                errors.append(str(status))
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run(url, body, content_type, connections, duration, warmup) -> dict:
    host, port, request = build_request(url, body, content_type)
    latencies: list[float] = []
    errors: list[str] = []
    start_at = time.perf_counter() + warmup
    stop_at = start_at + duration
    await asyncio.gather(
        *(
            worker(host, port, request, start_at, stop_at, latencies, errors)
            for _ in range(connections)
        )
    )
    latencies.sort()

    def percentile(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "rps": len(latencies) / duration,
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio works, a little slower
        pass
    result = asyncio.run(
        run(
            args.url,
            args.body_file.read_bytes(),
            args.content_type,
            args.connections,
            args.duration,
            args.warmup,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
