"""The batcher on a real event loop and thread pool: no timer, merge, limits, errors."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batching import BatchQueue
from serving.config import BatchingOptions
from serving.errors import InvalidArgumentError, UnavailableError
from serving.metrics import ServingMetrics


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
