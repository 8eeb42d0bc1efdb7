"""Request batching: merge concurrent requests for one servable signature into one TF call.

No timer: when a queue is idle a request runs at once; requests that arrive while a batch
executes wait and form the next batch together (up to max_batch_size rows), so batches
grow exactly as far as the load makes them and an idle model never waits for company.
Runs on the event loop; the TensorFlow call itself runs in the executor.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from serving.config import BatchingOptions
from serving.errors import InvalidArgumentError, ServingError, UnavailableError, UnknownError
from serving.metrics import ServingMetrics

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclasses.dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float


class BatchQueue:
    """The queue of one (model, version, signature, input layout)."""

    def __init__(
        self,
        model_name: str,
        run: RunFn,
        options: BatchingOptions,
        executor: Executor,
        metrics: ServingMetrics,
    ) -> None:
        self.model_name = model_name
        self._run = run
        self._options = options
        self._executor = executor
        self._metrics = metrics
        self._pending: collections.deque[_Task] = collections.deque()
        self._pending_rows = 0
        self._running = 0
        self._dispatch_scheduled = False

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `inputs` (leading dimension = rows) as part of a batch; return its outputs."""
        rows = next(iter(inputs.values())).shape[0]
        limit = self._options.max_batch_size
        if rows > limit:
            raise InvalidArgumentError(
                f"Task size {rows} is larger than maximum input batch size {limit}"
            )
        # TF Serving counts the queue in batches; a full queue refuses new work at once.
        if self._pending_rows + rows > limit * self._options.max_enqueued_batches:
            raise UnavailableError(
                "The batch scheduling queue to which this task was submitted is full"
            )
        loop = asyncio.get_running_loop()
        task = _Task(inputs, rows, loop.create_future(), time.perf_counter())
        self._pending.append(task)
        self._pending_rows += rows
        self._metrics.input_batch_size.observe(self.model_name, value=rows)
        if not self._dispatch_scheduled:
            # Dispatch at the end of this loop iteration, not on a timer: requests the
            # server has already received (gRPC hands them over in bursts) join the batch,
            # and a lone request still starts within microseconds.
            self._dispatch_scheduled = True
            loop.call_soon(self._dispatch)
        return await task.future

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while self._pending and self._running < self._options.num_batch_threads:
            batch: list[_Task] = []
            rows = 0
            while self._pending and rows + self._pending[0].rows <= self._options.max_batch_size:
                task = self._pending.popleft()
                if task.future.cancelled():  # the client gave up while queued
                    self._pending_rows -= task.rows
                    continue
                batch.append(task)
                rows += task.rows
            self._pending_rows -= rows
            if not batch:
                continue
            self._running += 1
            self._execute(batch, rows)
        self._metrics.batch_queue_size.set(self.model_name, value=len(self._pending))

    def _execute(self, batch: list[_Task], rows: int) -> None:
        """Hand one batch to the executor; `_finish` splits the outputs back (no extra task,
        so a lone request costs no more event-loop turns than without batching)."""
        now = time.perf_counter()
        pool = self._options.thread_pool_name
        for task in batch:
            self._metrics.queuing_latency.observe(pool, value=(now - task.enqueued) * 1e6)
        self._metrics.processed_batch_size.observe(self.model_name, value=rows)
        self._metrics.wrapped_run_count.inc()
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {
                alias: np.concatenate([t.inputs[alias] for t in batch]) for alias in batch[0].inputs
            }
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, merged)
        future.add_done_callback(functools.partial(self._finish, batch))

    def _finish(self, batch: list[_Task], future: asyncio.Future) -> None:
        try:
            error = future.exception()
            if error is None:
                outputs = future.result()
                start = 0
                for task in batch:
                    end = start + task.rows
                    if not task.future.done():
                        task.future.set_result(
                            {alias: value[start:end] for alias, value in outputs.items()}
                        )
                    start = end
            elif isinstance(error, ServingError):
                self._fail(batch, error)
            else:  # surface unexpected faults to every waiting request
                self._fail(batch, UnknownError(str(error)))
        finally:
            self._running -= 1
            self._dispatch()

    @staticmethod
    def _fail(batch: list[_Task], error: ServingError) -> None:
        for task in batch:
            if not task.future.done():
                task.future.set_exception(type(error)(error.message))


class Batcher:
    """Routes each request to the BatchQueue of its servable, signature and input layout."""

    def __init__(
        self, options: BatchingOptions, executor: Executor, metrics: ServingMetrics
    ) -> None:
        self.options = options
        self._executor = executor
        self._metrics = metrics
        self._queues: dict[tuple, BatchQueue] = {}

    async def submit(self, key: tuple, model_name: str, run: RunFn, inputs: dict) -> dict:
        """Batch `inputs` with others of the same `key` (servable identity, signature, layout)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = BatchQueue(
                model_name, run, self.options, self._executor, self._metrics
            )
        return await queue.submit(inputs)

    def forget(self, keep: Callable[[tuple], bool]) -> None:
        """Drop idle queues whose key `keep` rejects (e.g. of unloaded versions)."""
        for key in [k for k in self._queues if not keep(k)]:
            queue = self._queues[key]
            if not queue._pending and not queue._running:
                del self._queues[key]
