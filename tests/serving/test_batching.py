"""The batcher on a real event loop and thread pool: idle runs at once, merge, hold under
load, inline or executor calls, limits, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batching import INLINE_RUN_SECONDS, BatchQueue
from serving.errors import InvalidArgumentError, UnavailableError
from serving.metrics import ServingMetrics
from serving.server_config import BatchingOptions


class GatedModel:
    """Doubles its input; each call blocks until the test opens the gate."""

    def __init__(self, gated: bool = True) -> None:
        self.batch_sizes: list[int] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batch_sizes.append(len(inputs["x"]))
        self.started.set()
        assert self.gate.wait(30), "test never opened the gate"
        return {"y": inputs["x"] * 2}


def _queue(model, **options) -> tuple[BatchQueue, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2)
    queue = BatchQueue("m", model, BatchingOptions(**options), executor, ServingMetrics())
    return queue, executor


def _rows(start: int, count: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count, dtype=np.float32).reshape(count, 1)}


async def _wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


def test_an_idle_queue_runs_a_request_at_once():
    async def scenario():
        model = GatedModel()
        queue, executor = _queue(model, max_batch_size=8, num_batch_threads=1)
        task = asyncio.create_task(queue.submit(_rows(0)))
        # The TF call starts with this single request: nothing waits for company.
        await _wait_for(model.started)
        assert model.batch_sizes == [1]
        model.gate.set()
        result = await task
        executor.shutdown()
        return result

    np.testing.assert_array_equal(asyncio.run(scenario())["y"], [[0.0]])


def test_requests_arriving_during_a_batch_are_merged_and_split_back():
    async def scenario():
        model = GatedModel()
        queue, executor = _queue(model, max_batch_size=4, num_batch_threads=1)
        first = asyncio.create_task(queue.submit(_rows(0)))
        await _wait_for(model.started)
        later = [asyncio.create_task(queue.submit(_rows(10 * i, 1))) for i in range(1, 11)]
        await asyncio.sleep(0)  # let them enqueue behind the running batch
        model.gate.set()
        results = await asyncio.gather(first, *later)
        executor.shutdown()
        return model.batch_sizes, results

    batch_sizes, results = asyncio.run(scenario())
    assert batch_sizes == [1, 4, 4, 2]  # merged up to max_batch_size, in arrival order
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[20.0 * i]])  # each gets its own rows


def test_oversized_request_is_invalid_argument():
    async def scenario():
        queue, executor = _queue(GatedModel(gated=False), max_batch_size=4)
        try:
            await queue.submit(_rows(0, 5))
        finally:
            executor.shutdown()

    with pytest.raises(InvalidArgumentError, match="larger than maximum input batch size 4"):
        asyncio.run(scenario())


def test_full_queue_is_unavailable():
    async def scenario():
        model = GatedModel()
        queue, executor = _queue(
            model, max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1
        )
        running = asyncio.create_task(queue.submit(_rows(0)))
        await _wait_for(model.started)
        queued = [asyncio.create_task(queue.submit(_rows(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match=r"queue .* is full"):
            await queue.submit(_rows(3))
        model.gate.set()
        await asyncio.gather(running, *queued)
        executor.shutdown()

    asyncio.run(scenario())


def test_a_failing_batch_fails_each_of_its_requests():
    def broken(inputs):
        raise InvalidArgumentError("bad batch")

    async def scenario():
        queue, executor = _queue(broken, max_batch_size=4)
        results = await asyncio.gather(
            *(queue.submit(_rows(i)) for i in range(3)), return_exceptions=True
        )
        executor.shutdown()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, InvalidArgumentError) for r in results)


class RecordingModel:
    """Doubles its input and records the size and thread of every call (never blocks)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batch_sizes: list[int] = []
        self.threads: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batch_sizes.append(len(inputs["x"]))
        self.threads.append(threading.get_ident())
        if self.seconds:
            time.sleep(self.seconds)
        return {"y": inputs["x"] * 2}


async def _busy_queue(
    batch_timeout_micros: int,
) -> tuple[RecordingModel, BatchQueue, ThreadPoolExecutor]:
    """A queue whose model is busy: three requests sent in one loop turn formed one batch."""
    model = RecordingModel()
    queue, executor = _queue(
        model, max_batch_size=8, num_batch_threads=1, batch_timeout_micros=batch_timeout_micros
    )
    await asyncio.gather(*(queue.submit(_rows(i)) for i in range(3)))
    return model, queue, executor


def test_a_busy_model_holds_its_batch_open_while_requests_keep_arriving():
    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=30_000_000)
        tasks = []
        for i in range(5):  # one request per event-loop turn, as gRPC hands them over
            tasks.append(asyncio.create_task(queue.submit(_rows(10 + i))))
            await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        executor.shutdown()
        return model.batch_sizes, results

    batch_sizes, results = asyncio.run(scenario())
    assert batch_sizes == [3, 5]  # without the hold: [3, 1, 1, 1, 1, 1]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[(10.0 + i) * 2]])


def test_a_held_batch_is_released_once_the_loop_goes_quiet():
    """The closed-loop clients of the last batch are all back: waiting out the timeout
    (30 s here) would only idle the model."""

    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=30_000_000)
        started = asyncio.get_running_loop().time()
        tasks = []
        for i in range(3):  # the three clients of the last batch, one per loop turn
            tasks.append(asyncio.create_task(queue.submit(_rows(10 + i))))
            await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        executor.shutdown()
        return model.batch_sizes, results, asyncio.get_running_loop().time() - started

    batch_sizes, results, seconds = asyncio.run(scenario())
    assert batch_sizes == [3, 3]
    assert seconds < 5  # released after QUIET_TURNS turns, not the 30 s timeout
    np.testing.assert_array_equal(results[2]["y"], [[24.0]])


def test_a_held_batch_waits_through_quiet_turns_for_the_clients_of_recent_batches():
    """Under load the clients of the last batches are still on their way back: a quiet
    turn alone does not release a batch smaller than the recent ones."""

    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=30_000_000)
        first = asyncio.create_task(queue.submit(_rows(10)))
        for _ in range(20):  # many quiet loop turns
            await asyncio.sleep(0)
        sizes_while_held = list(model.batch_sizes)
        rest = [asyncio.create_task(queue.submit(_rows(11 + i))) for i in range(2)]
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        executor.shutdown()
        return sizes_while_held, model.batch_sizes, results

    sizes_while_held, batch_sizes, results = asyncio.run(scenario())
    assert sizes_while_held == [3]  # the lone request was still held
    assert batch_sizes == [3, 3]
    np.testing.assert_array_equal(results[0]["y"], [[20.0]])


def test_a_full_batch_ends_the_hold_at_once():
    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=30_000_000)
        first = asyncio.create_task(queue.submit(_rows(10)))
        await asyncio.sleep(0)
        rest = queue.submit(_rows(11, 7))  # fills the batch of 8
        results = await asyncio.wait_for(asyncio.gather(first, rest), 10)
        executor.shutdown()
        return model.batch_sizes, results

    batch_sizes, results = asyncio.run(scenario())
    assert batch_sizes == [3, 8]
    np.testing.assert_array_equal(results[1]["y"], np.arange(11, 18).reshape(7, 1) * 2)


def test_a_held_batch_runs_when_its_oldest_request_has_waited_the_timeout():
    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=50_000)
        result = await asyncio.wait_for(queue.submit(_rows(10)), 10)
        executor.shutdown()
        return model.batch_sizes, result

    batch_sizes, result = asyncio.run(scenario())
    assert batch_sizes == [3, 1]  # nobody joined: it ran alone once the timeout passed
    np.testing.assert_array_equal(result["y"], [[20.0]])


def test_a_busy_model_stays_busy_when_one_arrival_comes_later_than_the_timeout():
    # After a batch the server spends a while delivering results, so one arrival may come
    # later than the timeout; a loaded model must not fall back to running lone requests.
    async def scenario():
        model, queue, executor = await _busy_queue(batch_timeout_micros=50_000)
        await asyncio.sleep(0.07)  # one late arrival: more than 1, less than 5 timeouts
        first = asyncio.create_task(queue.submit(_rows(10)))
        await asyncio.sleep(0)
        second = asyncio.create_task(queue.submit(_rows(11)))  # the next turn: still held
        results = await asyncio.wait_for(asyncio.gather(first, second), 10)
        executor.shutdown()
        return model.batch_sizes, results

    batch_sizes, results = asyncio.run(scenario())
    assert batch_sizes == [3, 2]  # judged idle, `first` would have run alone: [3, 1, 1]
    np.testing.assert_array_equal(results[1]["y"], [[22.0]])


def test_a_model_idle_for_five_timeouts_runs_a_request_at_once():
    async def scenario():
        # RecordingModel is fast: after the first call its batches run on the loop.
        model, queue, executor = await _busy_queue(batch_timeout_micros=50_000)
        busy_batches = list(model.batch_sizes)
        await asyncio.sleep(0.3)  # idle for six batch timeouts
        task = asyncio.create_task(queue.submit(_rows(10)))
        for _ in range(3):  # a few loop turns, far less than any timeout
            await asyncio.sleep(0)
        ran_at_once = model.batch_sizes == [*busy_batches, 1]
        await task
        executor.shutdown()
        return busy_batches, ran_at_once

    busy_batches, ran_at_once = asyncio.run(scenario())
    assert busy_batches == [3]
    assert ran_at_once


def test_fast_batches_run_on_the_event_loop_and_slow_ones_in_the_executor():
    async def scenario(model):
        queue, executor = _queue(model, max_batch_size=8, num_batch_threads=1)
        for i in range(3):  # the first call is measured in the executor
            await queue.submit(_rows(i))
        executor.shutdown()
        return threading.get_ident()

    fast = RecordingModel()
    loop_thread = asyncio.run(scenario(fast))
    assert fast.threads[0] != loop_thread
    assert fast.threads[1:] == [loop_thread, loop_thread]

    slow = RecordingModel(seconds=INLINE_RUN_SECONDS * 5)
    loop_thread = asyncio.run(scenario(slow))
    assert loop_thread not in slow.threads
