"""Dynamic batching: concurrent requests for one model are coalesced into one forward pass.

A request waits at most ``max_batch_delay`` (counted from the oldest waiting request, as TorchServe
counts it) for others to join, and a batch holds at most ``max_batch_size`` instances; a request that
alone carries more instances runs alone. With a delay of 0 nothing waits on purpose: whatever queued
up while the previous forward pass ran goes into the next one, so batching costs no latency and
grows with load. The forward pass runs on the server's inference thread, never on the event loop.

Overload and slowness are answered, never absorbed: a full queue raises :class:`QueueFull` (503 with
Retry-After) at once, and a request that waits longer than its timeout gets :class:`asyncio.TimeoutError`
(504) and is dropped from the queue if it has not run yet. Neither blocks any other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("serving")


class QueueFull(Exception):
    """The model's queue is full; the client should retry later."""


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


@dataclass(slots=True)
class _Item:
    batch: np.ndarray
    future: asyncio.Future
    queued_at: float


class Batcher:
    """One queue and one batching task per model version; ``forward`` maps a batch to its outputs."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], policy: BatchPolicy, executor: Executor,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._forward = forward
        self.policy = policy
        self._executor = executor
        self._on_batch = on_batch or (lambda size: None)
        self._pending: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(QueueFull("the server is shutting down"))
        self._pending.clear()

    async def submit(self, batch: np.ndarray, timeout: float) -> np.ndarray:
        """Outputs for ``batch``: raises QueueFull, asyncio.TimeoutError, or what the model raised."""
        if len(self._pending) >= self.policy.max_queue:
            raise QueueFull(f"{len(self._pending)} requests are already waiting")
        loop = asyncio.get_running_loop()
        item = _Item(batch, loop.create_future(), loop.time())
        self._pending.append(item)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(item.future, timeout)  # cancels the future on timeout
        except BaseException:  # timed out, or the client went away: free its slot unless it already ran
            with contextlib.suppress(ValueError):
                self._pending.remove(item)
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.policy.max_batch_delay > 0:
                await self._fill(loop)
            items = self._take()
            if items:
                await self._execute(loop, items)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a full batch is queued or the oldest request's delay is spent."""
        deadline = self._pending[0].queued_at + self.policy.max_batch_delay
        while sum(len(i.batch) for i in self._pending) < self.policy.max_batch_size:
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
            if items and size + len(item.batch) > self.policy.max_batch_size:
                break
            items.append(self._pending.popleft())
            size += len(item.batch)
        return items

    async def _execute(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> None:
        batch = items[0].batch if len(items) == 1 else np.concatenate([i.batch for i in items])
        self._on_batch(len(batch))
        try:
            outputs = await loop.run_in_executor(self._executor, self._forward, batch)
        except Exception as exc:
            if len(items) == 1:
                _settle(items[0].future, exc=exc)
                return
            # One bad request must not fail its neighbours: run each alone to find it.
            log.warning("a batch of %d requests failed (%s: %s); running them one by one",
                        len(items), type(exc).__name__, exc)
            for item in items:
                try:
                    _settle(item.future, await loop.run_in_executor(self._executor, self._forward, item.batch))
                except Exception as single:
                    _settle(item.future, exc=single)
            return
        start = 0
        for item in items:
            _settle(item.future, outputs[start:start + len(item.batch)])
            start += len(item.batch)


def _settle(future: asyncio.Future, result: object = None, exc: BaseException | None = None) -> None:
    if future.done():  # the request timed out while its batch ran
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
