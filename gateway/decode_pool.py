"""A bounded pool of threads for image decoding, off the event loop.

`workers` decodes run at once and `queue` more may wait; a request beyond that gets a 503
with Retry-After at once rather than memory and latency that grow with the crowd. A
request whose deadline passes while it waits is taken out of the queue; one whose deadline
passes mid-decode is answered at once, and its decode runs out in its thread (a thread
cannot be stopped), still holding its place, so the bound stays true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.errors import DeadlineExceededError, OverloadedError
from gateway.memory import release_free_memory

T = TypeVar("T")
DECODER_NICENESS = 10


def _yield_to_the_loop() -> None:
    """Lower this decoder thread's scheduling priority (Linux: threads have their own nice
    value), so the event loop's thread gets a core first: /healthz and small requests
    stay fast while images decode."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODER_NICENESS)


class DecodePool:
    """Runs CPU-heavy preprocessing in threads, with a bound on work in flight."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="decode", initializer=_yield_to_the_loop
        )
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Decodes running or waiting."""
        return self._in_flight

    async def run(self, work: Callable[[], T], deadline: float) -> T:
        """Run `work` in a worker thread and return its result.

        `deadline` is a time.monotonic() value: OverloadedError (503) when the pool is
        full, DeadlineExceededError (504) when the deadline passes first.
        """
        if self._in_flight >= self.capacity:
            raise OverloadedError(
                f"the gateway is decoding {self._in_flight} images already "
                "(GATEWAY_DECODE_WORKERS + GATEWAY_DECODE_QUEUE); retry shortly"
            )
        self._in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)
        future.add_done_callback(self._finished)
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                # shield: on timeout the caller stops waiting, but a running decode keeps
                # its slot until its thread is done (cancel() below only unqueues).
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceededError(
                "the request's deadline (GATEWAY_REQUEST_TIMEOUT_SECONDS) passed while its "
                "images were being decoded; send smaller images or fewer per request"
            ) from None

    def _run(self, work: Callable[[], T]) -> T:
        try:
            return work()
        finally:
            if self._in_flight <= 1:
                # The burst is over: hand the decoders' freed memory back to the system.
                release_free_memory()

    def _finished(self, _future: asyncio.Future) -> None:
        self._in_flight -= 1

    def shutdown(self) -> None:
        """Stop accepting work; queued decodes are dropped, running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
