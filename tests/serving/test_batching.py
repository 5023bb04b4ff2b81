"""Dynamic batching: coalesced results equal unbatched ones; overload and slowness are answered, not absorbed."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serving.artifact import Artifact, load_artifact
from serving.batching import Batcher, BatchPolicy, QueueFull, array_forward
from serving.runner import predict


@pytest.fixture(scope="module")
def artifact(tiny_artifact_template: Path) -> Artifact:
    return load_artifact(tiny_artifact_template)


def _requests(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (int(rng.integers(1, 5)), 1, 8, 8)).astype(np.float32) for _ in range(n)]


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_coalesced_and_equal_unbatched_results(artifact: Artifact) -> None:
    requests = _requests(64)
    sizes: list[int] = []

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(
                array_forward(lambda b: predict(artifact, b)),
                BatchPolicy(max_batch_size=16, max_batch_delay=0.02),
                pool,
                on_batch=sizes.append,
            )
            batcher.start()
            try:
                return await asyncio.gather(*(batcher.submit(r, timeout=30) for r in requests))
            finally:
                await batcher.stop()

    outputs = _run(main())
    for request, output in zip(requests, outputs, strict=True):
        np.testing.assert_allclose(output, predict(artifact, request), rtol=1e-5, atol=1e-5)
    assert sum(sizes) == sum(len(r) for r in requests), "every instance runs exactly once"
    assert max(sizes) <= 16
    assert max(sizes) > 4, f"requests were not coalesced: batch sizes {sizes}"
    assert len(sizes) < len(requests)


def test_a_request_larger_than_the_batch_runs_alone(artifact: Artifact) -> None:
    big = np.zeros((40, 1, 8, 8), np.float32)
    sizes: list[int] = []

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(
                array_forward(lambda b: predict(artifact, b)),
                BatchPolicy(max_batch_size=8),
                pool,
                on_batch=sizes.append,
            )
            batcher.start()
            try:
                return await asyncio.gather(batcher.submit(big, 30), batcher.submit(big[:3], 30))
            finally:
                await batcher.stop()

    first, second = _run(main())
    assert first.shape == (40, 10)
    assert second.shape == (3, 10)
    assert sorted(sizes) == [3, 40]


def test_one_failing_request_does_not_fail_its_batch_neighbours(artifact: Artifact) -> None:
    def forward(batch: np.ndarray) -> np.ndarray:
        if (batch == 13).any():
            raise RuntimeError("model code cannot take 13")
        return predict(artifact, batch)

    good = _requests(6, seed=1)
    poison = np.full((1, 1, 8, 8), 13, np.float32)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(array_forward(forward), BatchPolicy(max_batch_size=64, max_batch_delay=0.05), pool)
            batcher.start()
            try:
                return await asyncio.gather(
                    *(batcher.submit(r, 30) for r in [*good[:3], poison, *good[3:]]), return_exceptions=True
                )
            finally:
                await batcher.stop()

    results = _run(main())
    assert isinstance(results[3], RuntimeError)
    for request, output in zip(good, results[:3] + results[4:], strict=True):
        np.testing.assert_allclose(output, predict(artifact, request), rtol=1e-5, atol=1e-5)


def test_full_queue_and_timeout_are_immediate_errors(artifact: Artifact) -> None:
    gate = threading.Event()

    def slow_forward(batch: np.ndarray) -> np.ndarray:
        gate.wait(10)
        return predict(artifact, batch)

    one = np.zeros((1, 1, 8, 8), np.float32)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(array_forward(slow_forward), BatchPolicy(max_batch_size=1, max_queue=2), pool)
            batcher.start()
            try:
                running = asyncio.ensure_future(batcher.submit(one, 30))  # taken by the worker, blocks on gate
                await asyncio.sleep(0.05)
                # a full batch (of 1) is handed to the inference thread at once, to run next: out of the queue
                handed = asyncio.ensure_future(batcher.submit(one, 30))
                await asyncio.sleep(0.05)
                assert batcher.depth == 0
                late = asyncio.ensure_future(batcher.submit(one, 0.1))  # two batches are out: this one queues
                await asyncio.sleep(0)
                assert batcher.depth == 1
                started = time.monotonic()
                with pytest.raises(TimeoutError):  # answered at its deadline while the model is still busy
                    await late
                assert 0.09 < time.monotonic() - started < 1
                assert batcher.depth == 0, "a timed-out request gives its queue slot back"
                fillers = [asyncio.ensure_future(batcher.submit(one, 30)) for _ in range(2)]
                await asyncio.sleep(0)
                assert batcher.depth == 2
                started = time.monotonic()
                with pytest.raises(QueueFull, match=r"^2 requests are already waiting$"):
                    await batcher.submit(one, 30)
                assert time.monotonic() - started < 0.5
                gate.set()
                return await asyncio.gather(running, handed, *fillers)
            finally:
                gate.set()
                await batcher.stop()

    results = _run(main())
    assert [r.shape for r in results] == [(1, 10)] * 4


def test_a_full_batch_starts_when_the_running_pass_ends_even_while_the_event_loop_is_busy(artifact: Artifact) -> None:
    gate, starts = threading.Event(), []

    def forward(batch: np.ndarray) -> np.ndarray:
        starts.append((time.monotonic(), len(batch)))
        if len(starts) == 1:
            gate.wait(10)
        return predict(artifact, batch)

    one = np.zeros((1, 1, 8, 8), np.float32)

    async def main() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(array_forward(forward), BatchPolicy(max_batch_size=2), pool)
            batcher.start()
            try:
                first = [asyncio.ensure_future(batcher.submit(one, 30)) for _ in range(2)]
                await asyncio.sleep(0.05)
                second = [asyncio.ensure_future(batcher.submit(one, 30)) for _ in range(2)]
                await asyncio.sleep(0.05)
                gate.set()
                time.sleep(0.3)  # the event loop is busy: the second pass must not need it to start
                unblocked = time.monotonic()
                await asyncio.gather(*first, *second)
                return unblocked
            finally:
                gate.set()
                await batcher.stop()

    unblocked = _run(main())
    assert [size for _, size in starts] == [2, 2]
    assert starts[1][0] < unblocked - 0.2, "the second pass waited for the event loop"


@pytest.mark.slow
def test_batching_over_http_under_concurrency(tiny_artifact: Path, start_server) -> None:
    server = start_server(tiny_artifact, args=("--max-batch-size", "16", "--max-batch-delay-ms", "20"))
    server.wait_ready()
    artifact = load_artifact(tiny_artifact)
    requests = _requests(48, seed=2)

    def call(x: np.ndarray) -> list[list[float]]:
        status, _, body = server.request(
            "POST", "/invocations", json.dumps(x.tolist()).encode(), {"Content-Type": "application/json"}
        )
        assert status == 200, body
        return [p["probabilities"] for p in json.loads(body)["predictions"]]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, requests))
    for request, probabilities in zip(requests, answers, strict=True):
        logits = predict(artifact, request)
        expected = np.exp(logits - logits.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
        np.testing.assert_allclose(probabilities, expected, atol=2e-6)  # responses are rounded to 6 places

    metrics = server.request("GET", "/metrics")[2].decode()
    passes = float(re.search(r'deepcloud_batch_size_count\{model="model:1"\} (\S+)', metrics).group(1))
    instances = float(re.search(r'deepcloud_batch_size_sum\{model="model:1"\} (\S+)', metrics).group(1))
    assert instances == sum(len(r) for r in requests)  # every instance once (the warm-up pass is not counted)
    assert passes < len(requests), "16 concurrent clients with a 20 ms delay must share forward passes"
