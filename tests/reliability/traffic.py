"""Steady, bounded HTTP traffic against the gateway, recorded request by request.

`Traffic` runs an asyncio httpx client in a background thread, so a test can export
versions, kill servers or send signals while requests flow. Every request's start, end,
status, served version and error is kept for the assertions and the JSON summaries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx


@dataclasses.dataclass
class Outcome:
    """One request: when it was sent and answered, and what came back."""

    index: int
    started: float  # time.monotonic() just before the request was written
    finished: float
    status: int | None = None  # None: no HTTP response (connection refused, reset, timeout)
    version: int | None = None
    error_code: str | None = None  # the error body's "code"
    retry_after: str | None = None
    transport_error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def ok(self) -> bool:
        return self.status == 200


class Traffic:
    """`max_requests` POSTs at `rate` per second (at most `concurrency` in flight).

    Stops by itself after `max_requests` or `max_seconds`, or when `stop()` is called.
    """

    def __init__(
        self,
        base_url: str,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        rate: float = 20.0,
        concurrency: int = 8,
        max_requests: int = 1000,
        max_seconds: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.path = path
        self.body = body
        self.headers = {"content-type": content_type}
        self.rate = rate
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.in_flight = 0  # sent and not yet answered; only the loop's thread writes it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- control -------------------------------------------------------------------------

    def start(self) -> Traffic:
        """Start sending in a background thread."""
        self._thread = threading.Thread(target=self._main, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop scheduling, wait for the requests in flight, return every outcome."""
        self._stop.set()
        return self.join()

    def join(self) -> list[Outcome]:
        """Wait until the run ends by itself; return every outcome, in start order."""
        assert self._thread is not None, "traffic not started"
        self._thread.join(self.max_seconds + self.timeout + 10)
        if self._thread.is_alive():
            raise TimeoutError("the traffic run did not stop within its own bounds")
        if self._error is not None:
            raise self._error
        return sorted(self.outcomes, key=lambda o: o.started)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[list[Outcome]], bool], timeout: float) -> float:
        """Poll the outcomes so far until `predicate` holds; return when (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.outcomes)):
                return time.monotonic()
            if self._thread is not None and not self._thread.is_alive():
                break
            time.sleep(0.02)
        raise TimeoutError(f"traffic condition not met within {timeout:.0f}s")

    # -- the loop --------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # surfaced by join(), not lost in the thread
            self._error = error

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=0)
        semaphore = asyncio.Semaphore(self.concurrency)
        began = time.monotonic()
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, limits=limits
        ) as client:
            tasks = []
            for index in range(self.max_requests):
                due = began + index / self.rate
                now = time.monotonic()
                if self._stop.is_set() or now - began > self.max_seconds:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                await semaphore.acquire()
                if self._stop.is_set():
                    semaphore.release()
                    break
                tasks.append(asyncio.create_task(self._send(client, index, semaphore)))
            await asyncio.gather(*tasks)

    async def _send(self, client: httpx.AsyncClient, index: int, semaphore) -> None:
        started = time.monotonic()
        outcome = Outcome(index, started, started)
        self.in_flight += 1
        try:
            response = await client.post(self.path, content=self.body, headers=self.headers)
            outcome.status = response.status_code
            outcome.retry_after = response.headers.get("retry-after")
            payload = _json_or_none(response)
            if isinstance(payload, dict):
                if response.status_code == 200:
                    outcome.version = payload.get("version")
                else:
                    outcome.error_code = (payload.get("error") or {}).get("code")
        except httpx.HTTPError as error:
            outcome.transport_error = f"{type(error).__name__}: {error}"
        finally:
            outcome.finished = time.monotonic()
            self.in_flight -= 1
            self.outcomes.append(outcome)
            semaphore.release()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def failures(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes that are not a 200."""
    return [o for o in outcomes if not o.ok]


def backward_steps(outcomes: list[Outcome]) -> list[tuple[Outcome, int]]:
    """Requests that saw an older version than one already answered before they started.

    Concurrent requests have no order, but if A was answered before B was sent, B must not
    be served by an older version than A: that is "the versions seen only move forward".
    """
    by_finish = sorted((o for o in outcomes if o.version is not None), key=lambda o: o.finished)
    steps = []
    newest_answered = 0
    cursor = 0
    for outcome in sorted(outcomes, key=lambda o: o.started):
        while cursor < len(by_finish) and by_finish[cursor].finished < outcome.started:
            newest_answered = max(newest_answered, by_finish[cursor].version)
            cursor += 1
        if outcome.version is not None and outcome.version < newest_answered:
            steps.append((outcome, newest_answered))
    return steps


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts by status, by version, and latency percentiles (ms) of the answered ones."""
    statuses: dict[str, int] = {}
    versions: dict[str, int] = {}
    for o in outcomes:
        key = str(o.status) if o.status is not None else "no_response"
        statuses[key] = statuses.get(key, 0) + 1
        if o.version is not None:
            versions[str(o.version)] = versions.get(str(o.version), 0) + 1
    latencies = sorted(o.latency * 1000 for o in outcomes if o.status is not None)

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "requests": len(outcomes),
        "failures": len(failures(outcomes)),
        "statuses": statuses,
        "versions": versions,
        "latency_ms": {"p50": percentile(0.5), "p99": percentile(0.99), "max": percentile(1.0)},
    }
