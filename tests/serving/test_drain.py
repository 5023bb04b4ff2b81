"""Shutdown and overload over real HTTP: SIGTERM drains what is in flight, slowness is a 504, a full queue a 503.

Requests are held in the batcher's queue on purpose with a long ``--max-batch-delay-ms`` (the batch waits for
more requests that never come), so they are provably in flight when the signal or the next request arrives.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.live import images, predict, queue_depth, reference_indices, request, write_store

pytestmark = pytest.mark.slow

DELAY_MS = 3000


def port_is_free_to_serve_again(port: int) -> bool:
    """Whether a new server could bind the port now, as serving/server.py binds it (SO_REUSEADDR).

    Not tests.conftest.port_is_free: without SO_REUSEADDR, bind fails for 60 s after a drain that answered
    requests, because the server closed those connections first and its ends sit in TIME_WAIT. That is TCP, not
    a leftover listener; a leftover listener fails this check too.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def wait_for_queue(port: int, model: str, depth: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while queue_depth(port, model) < depth:
        assert time.monotonic() < deadline, f"{model} never had {depth} requests waiting"
        time.sleep(0.02)


def test_sigterm_drains_in_flight_requests_then_exits_by_the_signal(tmp_path: Path, start_server) -> None:
    store = write_store(tmp_path / "store", {"digits": ["1"]})
    server = start_server(
        store, args=("--model-store", str(store), "--max-batch-delay-ms", str(DELAY_MS), "--max-batch-size", "64")
    )
    server.wait_ready()
    batches = [images(1 + i % 3, seed=i) for i in range(8)]  # 12 instances in all: the batch of 64 never fills

    with ThreadPoolExecutor(len(batches)) as pool:
        started = time.monotonic()
        answers = [pool.submit(predict, server.port, "/predictions/digits", batch) for batch in batches]
        wait_for_queue(server.port, "digits:1", len(batches))
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert signalled - started < DELAY_MS / 1000, "the requests were answered before the signal: no drain shown"

        # The listening socket closes at once; the requests already accepted are still answered.
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "new connections were still accepted 5 s after SIGTERM"
            time.sleep(0.05)
        assert all(not answer.done() for answer in answers), "in-flight requests were answered before their batch"

        for batch, answer in zip(batches, answers, strict=True):
            status, body = answer.result(timeout=30)
            assert status == 200, body
            assert [p["index"] for p in body["predictions"]] == reference_indices(store / "digits" / "1", batch)
        answered = time.monotonic()

    assert server.wait_exit(timeout=30) == -signal.SIGTERM, server.output()[-3000:]
    exited = time.monotonic()
    assert answered - started >= DELAY_MS / 1000 - 0.5, "the batch did not wait for its delay"
    assert exited - signalled < 30, f"exit took {exited - signalled:.1f} s after SIGTERM"
    output = server.output()
    assert "Traceback" not in output, output[-5000:]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)
    assert port_is_free_to_serve_again(server.port), "the port is still taken after exit"


def test_a_request_past_the_timeout_is_a_504_and_other_models_are_unaffected(tmp_path: Path, start_server) -> None:
    store = write_store(tmp_path / "store", {"fast": ["1"], "slow": ["1"]})
    server = start_server(
        store,
        args=(
            "--model-store",
            str(store),
            "--timeout-s",
            "1",
            "--max-batch-delay-ms",
            f"0,slow={DELAY_MS}",
            "--max-batch-size",
            "32,slow=4",
        ),
    )
    server.wait_ready()
    one, four = images(1, seed=1), images(4, seed=2)

    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        slow: Future = pool.submit(
            request,
            server.port,
            "POST",
            "/predictions/slow",
            json.dumps(one.tolist()).encode(),
            {"Content-Type": "application/json"},
        )
        wait_for_queue(server.port, "slow:1", 1)
        # While the slow model's request waits, the fast model answers at once.
        fast_started = time.monotonic()
        status, body = predict(server.port, "/predictions/fast", one)
        assert status == 200, body
        assert time.monotonic() - fast_started < 0.9, "the fast model waited on the slow one"
        assert [p["index"] for p in body["predictions"]] == reference_indices(store / "fast" / "1", one)

        status, headers, raw = slow.result(timeout=30)
        elapsed = time.monotonic() - started
    assert status == 504, raw
    assert headers["content-type"] == "application/json"
    error = json.loads(raw)
    assert error["code"] == "timeout", error
    assert isinstance(error["message"], str), error
    assert 0.9 < elapsed < DELAY_MS / 1000, f"the 504 came after {elapsed:.2f} s, not after the 1 s timeout"

    # The slow model itself still works: a request that fills its batch runs without waiting for the delay.
    status, body = predict(server.port, "/predictions/slow", four)
    assert status == 200, body
    assert [p["index"] for p in body["predictions"]] == reference_indices(store / "slow" / "1", four)
    assert queue_depth(server.port, "slow:1") == 0, "the timed-out request was left in the queue"
    assert "Traceback" not in server.output()


def test_a_full_queue_is_a_503_with_retry_after(tmp_path: Path, start_server) -> None:
    store = write_store(tmp_path / "store", {"digits": ["1"]})
    server = start_server(
        store,
        args=(
            "--model-store",
            str(store),
            "--max-queue",
            "2",
            "--max-batch-delay-ms",
            str(DELAY_MS),
            "--max-batch-size",
            "64",
        ),
    )
    server.wait_ready()
    queued = [images(1, seed=i) for i in range(2)]

    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(predict, server.port, "/predictions/digits", batch) for batch in queued]
        wait_for_queue(server.port, "digits:1", 2)
        status, headers, raw = request(
            server.port,
            "POST",
            "/predictions/digits",
            json.dumps(images(1, seed=9).tolist()).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 503, raw
        assert headers["retry-after"].isdigit(), headers
        assert int(headers["retry-after"]) >= 1, headers
        assert headers["content-type"] == "application/json"
        error = json.loads(raw)
        assert error["code"] == "overloaded", error
        assert isinstance(error["message"], str), error

        # The queued requests are not harmed by the refusal: they get their answers when the delay is spent.
        for batch, answer in zip(queued, waiting, strict=True):
            status, body = answer.result(timeout=30)
            assert status == 200, body
            assert [p["index"] for p in body["predictions"]] == reference_indices(store / "digits" / "1", batch)
    status, body = predict(server.port, "/predictions/digits", images(64, seed=9))  # a full batch: no delay
    assert status == 200, body  # room again


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_extracted_archives_are_removed_when_a_signal_ends_the_server(
    tiny_artifact_template: Path, tmp_path: Path, start_server, stop: signal.Signals
) -> None:
    """uvicorn ends the process by re-raising the signal, past any ``finally`` around its run: the clean-up
    runs inside its signal handling instead (serving/server.py ``_server``)."""
    import tarfile

    from tests.serving.test_limits import _image_mar

    store, scratch = tmp_path / "store", tmp_path / "tmp"
    store.mkdir()
    scratch.mkdir()
    with tarfile.open(store / "digits.tar.gz", "w:gz") as tar:
        for path in sorted(tiny_artifact_template.iterdir()):
            tar.add(path, arcname=path.name)
    _image_mar(store / "img.mar")
    server = start_server(store, args=("--model-store", str(store)), env={"TMPDIR": str(scratch)})
    server.wait_ready()
    assert sorted(p.name.rsplit("-", 1)[0] for p in scratch.iterdir()) == ["deepcloud-mar", "deepcloud-model"]
    server.proc.send_signal(stop)
    assert server.wait_exit(timeout=30) == -stop
    assert list(scratch.iterdir()) == []
    assert "Traceback" not in server.output()
