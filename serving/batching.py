"""Dynamic batching: concurrent requests for one model are coalesced into one forward pass.

A request waits at most ``max_batch_delay`` (counted from the oldest waiting request, as TorchServe
counts it) for others to join, and a batch holds at most ``max_batch_size`` instances; a request that
alone carries more instances runs alone. With a delay of 0 nothing waits on purpose: whatever queued
up while the previous forward pass ran goes into the next one, so batching costs no latency and
grows with load. The forward pass runs on the server's inference thread, never on the event loop.
When a full batch is already queued while a pass runs, it is handed to the inference thread at once,
to start the moment the running pass ends: under load the thread then never waits for the event
loop between two passes (up to two batches are with it, one running and one full one waiting).

Requests are opaque items with a size (instances): ``forward`` takes a list of them and returns one
result per item, in order, where a result that is an exception fails only its own request. A runner's
``forward`` does that: the native runner (serving/runner.py) is built on :func:`array_forward`, which
runs one pass over the concatenated arrays and splits the output back per request; TorchServe handlers
get the list itself, as TorchServe's ``handle(data, context)`` does.

Overload and slowness are answered, never absorbed: a full queue raises :class:`QueueFull` (503 with
Retry-After) at once, and a request that waits longer than its timeout gets ``AnswerTimeout`` (504, a
``TimeoutError``; both are serving/errors.py's) and is dropped from the queue if it has not run yet.
Neither blocks any other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import AnswerTimeout, Overloaded

log = logging.getLogger("serving")


class QueueFull(Overloaded):
    """The model's queue is full (or it is stopping); the client should retry later (503)."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32
    """Most instances in one forward pass (requests are never split)."""
    max_batch_delay: float = 0.0
    """Seconds the oldest queued request may wait for others to join; 0 = take what is queued."""
    max_queue: int = 1024
    """Most requests waiting per model; one more gets 503."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_batch_delay < 0:
            raise ValueError(f"max_batch_delay must be 0 or more, got {self.max_batch_delay}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {self.max_queue}")


Forward = Callable[[list[Any]], Sequence[Any]]


def _split_array(outputs: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(outputs, np.cumsum(sizes)[:-1])


def array_forward(
    fn: Callable[[np.ndarray], Any], split: Callable[[Any, list[int]], Sequence[Any]] = _split_array
) -> Forward:
    """A list-of-arrays forward from a batch function: one pass over the concatenated arrays, its output
    ``split`` back into one result per request (rows, by default)."""

    def forward(arrays: list[np.ndarray]) -> Sequence[Any]:
        if len(arrays) == 1:
            return [fn(arrays[0])]
        return split(fn(np.concatenate(arrays)), [len(a) for a in arrays])

    return forward


@dataclass(slots=True)
class _Item:
    payload: Any
    size: int
    future: asyncio.Future
    queued_at: float
    expired: bool = False


class Batcher:
    """One queue and one batching task per model version; ``forward`` maps a list of items to results."""

    def __init__(
        self,
        forward: Forward,
        policy: BatchPolicy,
        executor: Executor,
        on_batch: Callable[[int], None] | None = None,
        size: Callable[[Any], int] = len,
    ) -> None:
        self._forward = forward
        self._size = size
        self.policy = policy
        self._executor = executor
        self._on_batch = on_batch or (lambda size: None)
        self._pending: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: dict[asyncio.Task, list[_Item]] = {}

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Requests are queued or running: stopping now would fail them (a multi-model host evicts idle ones)."""
        return bool(self._pending or self._running)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in (*self._pending, *(i for items in self._running.values() for i in items)):
            if not item.future.done():
                item.future.set_exception(QueueFull("the server is shutting down"))
        self._pending.clear()
        self._running.clear()

    async def submit(self, payload: Any, timeout: float) -> Any:
        """The result for ``payload``: raises QueueFull, AnswerTimeout, or what the model raised for it."""
        if len(self._pending) >= self.policy.max_queue:
            waiting = len(self._pending)
            raise QueueFull(
                f"{waiting} request{'' if waiting == 1 else 's'} {'is' if waiting == 1 else 'are'} already waiting"
            )
        loop = asyncio.get_running_loop()
        item = _Item(payload, self._size(payload), loop.create_future(), loop.time())
        self._pending.append(item)
        self._wakeup.set()
        # A timer handle rather than asyncio.wait_for, which costs a task per request on the hot path.
        timer = loop.call_later(timeout, _expire, item)
        try:
            return await item.future
        except BaseException as exc:  # timed out, or the client went away: free its slot unless it already ran
            with contextlib.suppress(ValueError):
                self._pending.remove(item)
            if isinstance(exc, asyncio.CancelledError) and item.expired:
                raise AnswerTimeout(f"no answer within {timeout:g} s: send smaller batches or retry later") from None
            raise
        finally:
            timer.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Wait for a request, and while a pass runs for a full batch (or for the pass to end).
            while not self._pending or (self._running and (len(self._running) > 1 or not self._full())):
                self._wakeup.clear()
                await self._wakeup.wait()
            if not self._running and self.policy.max_batch_delay > 0:
                await self._fill(loop)
            items = self._take()
            if items:
                task = loop.create_task(self._execute(loop, items))
                self._running[task] = items
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        self._wakeup.set()

    def _full(self) -> bool:
        return sum(i.size for i in self._pending) >= self.policy.max_batch_size

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a full batch is queued or the oldest request's delay is spent."""
        deadline = self._pending[0].queued_at + self.policy.max_batch_delay
        while not self._full():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        items: list[_Item] = []
        size = 0
        while self._pending:
            item = self._pending[0]
            if item.future.done():  # timed out or cancelled while queued: never run it
                self._pending.popleft()
                continue
            if items and size + item.size > self.policy.max_batch_size:
                break
            items.append(self._pending.popleft())
            size += item.size
        return items

    async def _execute(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> None:
        self._on_batch(sum(i.size for i in items))
        try:
            results = await loop.run_in_executor(self._executor, self._run_forward, [i.payload for i in items])
        except Exception as exc:
            if len(items) == 1:
                _settle(items[0].future, exc=exc)
                return
            # One bad request must not fail its neighbours: run each alone to find it.
            log.warning(
                "a batch of %d requests failed (%s: %s); running them one by one", len(items), type(exc).__name__, exc
            )
            for item in items:
                try:
                    (result,) = await loop.run_in_executor(self._executor, self._run_forward, [item.payload])
                except Exception as single:
                    _settle(item.future, exc=single)
                else:
                    _settle(item.future, result)
            return
        for item, result in zip(items, results, strict=True):
            _settle(item.future, result)

    def _run_forward(self, payloads: list[Any]) -> Sequence[Any]:
        results = self._forward(payloads)
        if len(results) != len(payloads):
            raise RuntimeError(f"the model returned {len(results)} results for a batch of {len(payloads)} requests")
        return results


def _expire(item: _Item) -> None:
    if not item.future.done():
        item.expired = True  # tells submit() that this cancellation is the timeout, not the client leaving
        item.future.cancel()


def _settle(future: asyncio.Future, result: object = None, exc: BaseException | None = None) -> None:
    if future.done():  # the request timed out while its batch ran
        return
    if exc is None and isinstance(result, BaseException):  # forward failed this request alone
        exc = result
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
