"""Request batching: merge concurrent requests for one servable signature into one TF call.

When the model is idle a request runs at once: nothing waits for company. Requests that
arrive while a batch executes wait and form the next batch together (up to max_batch_size
rows). Once the model is busy, a new batch is held open as tensorflow_model_server holds
every batch: until it is full or its oldest request has waited batch_timeout_micros.
Without that hold, batches stay at one or two requests under load, because gRPC hands the
server one request per event-loop turn.

"Busy" means: the last batch merged several requests, and requests have been arriving less
than batch_timeout_micros apart (smoothed). The smoothing matters: after a batch the loop
spends a while delivering its results, and the next arrival comes late; judged by that one
gap a loaded model would look idle, run a lone request, and stay unbatched. A lone client
(each request sent after the previous answer) never forms a batch of two, so it never waits.
After an idle spell of five timeouts or more, the first request's gap alone lifts the average
above the timeout, and it runs at once.

A batch whose call has been taking under INLINE_RUN_SECONDS runs on the event loop itself:
handing a call that short to a thread and back costs more than the call (two thread
switches and a wake-up of the loop, all fighting for the GIL). Slower calls run in the
executor so that the loop stays responsive.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from serving.errors import InvalidArgumentError, ServingError, UnavailableError, UnknownError
from serving.metrics import ServingMetrics
from serving.server_config import BatchingOptions

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

# A batch call this short (measured, smoothed) runs on the event loop; a longer one would
# hold up every other request on the loop, so it runs in the executor.
INLINE_RUN_SECONDS = 0.001
# Weight of the newest sample in the smoothed call duration and arrival gap.
_SMOOTHING_WEIGHT = 0.2
# A held batch is released once this many event-loop turns in a row brought no new request
# and it is as large as the recent batches: the loop has nothing left that could join it,
# and waiting on would only idle the model.
QUIET_TURNS = 2
# How many recent batches set the size a held batch waits for. The largest of them, not the
# last: closed-loop clients that once split into two batches would otherwise stay split.
RECENT_BATCHES = 8


@dataclasses.dataclass(slots=True)
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float  # event-loop time (loop.time()), the clock the hold timer runs on


def _smooth(average: float, sample: float) -> float:
    """Exponentially weighted moving average; the first sample (average inf) starts it."""
    if math.isinf(average):
        return sample
    return average + _SMOOTHING_WEIGHT * (sample - average)


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
        self._hold_timer: asyncio.TimerHandle | None = None
        self._release_hold = False
        self._arrivals = 0  # requests submitted so far: a held batch watches it grow
        self._watched_arrivals = 0
        self._quiet_turns = 0
        self._recent_batch_requests: collections.deque[int] = collections.deque(
            maxlen=RECENT_BATCHES
        )
        self._last_arrival = -math.inf
        self._arrival_gap = math.inf  # smoothed seconds between arrivals
        self._run_seconds = math.inf  # smoothed; the first call is measured in the executor

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
        now = loop.time()
        self._arrival_gap = _smooth(self._arrival_gap, now - self._last_arrival)
        self._last_arrival = now
        self._arrivals += 1
        task = _Task(inputs, rows, loop.create_future(), now)
        self._pending.append(task)
        self._pending_rows += rows
        full = self._pending_rows >= limit
        if not self._dispatch_scheduled and (self._hold_timer is None or full):
            # Dispatch at the end of this loop iteration: requests the server has already
            # received join the batch, and a lone request on an idle model starts within
            # microseconds. While a busy model holds its batch open, only a full batch
            # cuts the hold short.
            self._dispatch_scheduled = True
            loop.call_soon(self._dispatch)
        return await task.future

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._pending and self._running < self._options.num_batch_threads:
            hold_until = None if self._release_hold else self._hold_deadline()
            if hold_until is not None:
                if self._hold_timer is None:
                    loop = asyncio.get_running_loop()
                    self._hold_timer = loop.call_at(hold_until, self._end_hold)
                    self._watched_arrivals = self._arrivals
                    self._quiet_turns = 0
                    loop.call_soon(self._watch_hold)
                return
        self._release_hold = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
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
            self._recent_batch_requests.append(len(batch))
            self._execute(batch, rows)
        self._metrics.batch_queue_size.set(self.model_name, value=len(self._pending))

    def _hold_deadline(self) -> float | None:
        """Event-loop time until which the pending batch waits for company, or None."""
        timeout = self._options.batch_timeout_micros * 1e-6
        recent = self._recent_batch_requests
        busy = bool(recent) and recent[-1] > 1 and self._arrival_gap < timeout
        if not busy or self._pending_rows >= self._options.max_batch_size:
            return None
        deadline = self._pending[0].enqueued + timeout
        return deadline if deadline > asyncio.get_running_loop().time() else None

    def _watch_hold(self) -> None:
        """Once per event-loop turn while a batch is held: release it when QUIET_TURNS turns
        in a row brought no request and as many requests wait as the largest recent batch.
        With a few closed-loop clients, all of them are soon in the batch and nobody else
        can come; under load, the clients of the last batches are still on their way back,
        and releasing at the first quiet turn would cut the batch short (make bench-serving,
        c=64). The timeout still bounds the wait when clients go away."""
        if self._hold_timer is None:
            return  # the hold already ended (full batch, or its timeout)
        if self._arrivals != self._watched_arrivals:
            self._watched_arrivals = self._arrivals
            self._quiet_turns = 0
        else:
            self._quiet_turns += 1
            expected = max(self._recent_batch_requests, default=0)
            if self._quiet_turns >= QUIET_TURNS and len(self._pending) >= expected:
                self._hold_timer.cancel()
                self._release_hold = True
                self._end_hold()
                return
        asyncio.get_running_loop().call_soon(self._watch_hold)

    def _end_hold(self) -> None:
        self._hold_timer = None
        self._dispatch()

    def _execute(self, batch: list[_Task], rows: int) -> None:
        """Run one batch, inline or in the executor (see INLINE_RUN_SECONDS); `_complete`
        splits the outputs back (no extra task, so a lone request costs no more event-loop
        turns than without batching)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        metrics = self._metrics
        # Recorded per batch, one lock each: per-request updates cost the loop more.
        metrics.input_batch_size.observe_many(self.model_name, values=[t.rows for t in batch])
        metrics.queuing_latency.observe_many(
            self._options.thread_pool_name, values=[(now - t.enqueued) * 1e6 for t in batch]
        )
        metrics.processed_batch_size.observe(self.model_name, value=rows)
        metrics.wrapped_run_count.inc()
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {
                alias: np.concatenate([t.inputs[alias] for t in batch]) for alias in batch[0].inputs
            }
        if self._run_seconds < INLINE_RUN_SECONDS:
            try:
                outputs, error = self._timed_run(merged), None
            except Exception as raised:  # delivered to the waiting requests below
                outputs, error = None, raised
            self._complete(batch, outputs, error)
            return
        self._running += 1
        future = loop.run_in_executor(self._executor, self._timed_run, merged)
        future.add_done_callback(functools.partial(self._finish, batch))

    def _timed_run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return self._run(inputs)
        finally:
            seconds = time.perf_counter() - started
            self._run_seconds = _smooth(self._run_seconds, seconds)

    def _finish(self, batch: list[_Task], future: asyncio.Future) -> None:
        try:
            error = future.exception()
            self._complete(batch, None if error else future.result(), error)
        finally:
            self._running -= 1
            self._dispatch()

    def _complete(
        self, batch: list[_Task], outputs: dict[str, np.ndarray] | None, error: BaseException | None
    ) -> None:
        if error is None:
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

    @staticmethod
    def _fail(batch: list[_Task], error: ServingError) -> None:
        for task in batch:
            if not task.future.done():
                task.future.set_exception(type(error)(error.message))


class Batcher:
    """The BatchQueues of every loaded version, keyed by (servable key, signature, layout).

    The servable key is (model, version, load generation), never an object id: ids are
    reused once an unloaded version is freed, and a new version must not land on an old
    queue. `drop` forgets a version's queues when it is unloaded, so nothing here keeps an
    unloaded version alive.
    """

    def __init__(
        self, options: BatchingOptions, executor: Executor, metrics: ServingMetrics
    ) -> None:
        self.options = options
        self._executor = executor
        self._metrics = metrics
        self._queues: dict[tuple, BatchQueue] = {}

    def queue(self, key: tuple, model_name: str, run: Callable[[], RunFn]) -> BatchQueue:
        """The queue of `key` ((servable key, signature, layout)); `run()` builds the run
        function of a new one."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = BatchQueue(
                model_name, run(), self.options, self._executor, self._metrics
            )
        return queue

    def drop(self, servable_key: tuple) -> int:
        """Forget every queue of one servable (called once it has no requests in flight);
        returns how many were dropped."""
        doomed = [key for key in list(self._queues) if key[0] == servable_key]
        for key in doomed:
            self._queues.pop(key, None)
        return len(doomed)

    def __len__(self) -> int:
        return len(self._queues)
