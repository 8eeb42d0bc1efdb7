"""The decode pool's bound and deadline (issue 15 #4), with work that waits on an event.

Every test releases its blocked work in `finally`, so a failure cannot leave a worker
thread waiting for ever.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.decode_pool import DecodePool
from gateway.errors import DeadlineExceededError, OverloadedError


def test_work_beyond_workers_and_queue_is_refused_with_a_503() -> None:
    release = threading.Event()

    async def scenario() -> None:
        pool = DecodePool(workers=1, queue=1)
        deadline = time.monotonic() + 30
        running = asyncio.ensure_future(pool.run(release.wait, deadline))
        waiting = asyncio.ensure_future(pool.run(lambda: "queued", deadline))
        await asyncio.sleep(0)  # let both register
        try:
            assert pool.in_flight == 2
            with pytest.raises(OverloadedError) as refused:
                await pool.run(lambda: "one too many", time.monotonic() + 1)
            assert refused.value.status_code == 503
        finally:
            release.set()
        assert await running is True and await waiting == "queued"
        assert pool.in_flight == 0
        assert await pool.run(lambda: "room again", deadline) == "room again"
        pool.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_a_deadline_passing_mid_decode_answers_at_once_and_keeps_the_slot() -> None:
    release = threading.Event()

    async def scenario() -> None:
        pool = DecodePool(workers=1, queue=0)
        with pytest.raises(DeadlineExceededError):
            await pool.run(release.wait, time.monotonic() + 0.05)
        # The thread still decodes: its slot stays taken until it ends, so the bound holds.
        assert pool.in_flight == 1
        with pytest.raises(OverloadedError):
            await pool.run(lambda: None, time.monotonic() + 1)
        release.set()
        for _ in range(200):
            if pool.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.in_flight == 0
        pool.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
