"""10,000 malformed requests, 16 at a time, at one real server process; it must answer every one and stay healthy.

The corpus (tests/serving/malformed_corpus.py) is deterministic: truncated and invalid JSON, wrong types, huge
numbers, NaN/Infinity, 100,000-deep nesting, wrong shapes, out-of-range pixels, empty bodies, random bytes,
invalid UTF-8, wrong or missing Content-Type, bad .npy files, bad PNG/JPEG, bodies over the 6 MB limit (with a
Content-Length, chunked, or only declared), unwritable Accept headers, unknown models and versions, and wrong
methods. Every answer must be the status the probe expects (never a 5xx), every error a JSON
``{"code", "message"}``; /ping, polled the whole time, must always be 200; and afterwards valid requests must
still get the right predictions from every model version.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.serving.live import images, predict, reference_indices, request, write_store
from tests.serving.malformed_corpus import NPY, PNG, Probe, corpus

pytestmark = pytest.mark.slow

CONCURRENCY = 16
PROBES = 10_000
VERSIONS = ("1", "2")


def send(port: int, probe: Probe) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if probe.declared_length is not None:
            conn.putrequest(probe.method, probe.path)
            for name, value in {**probe.headers, "Content-Length": str(probe.declared_length)}.items():
                conn.putheader(name, value)
            conn.endheaders(probe.body)
        elif probe.chunked:
            assert probe.body is not None
            chunks = (probe.body[i : i + 65536] for i in range(0, len(probe.body), 65536))
            conn.request(
                probe.method,
                probe.path,
                body=chunks,
                encode_chunked=True,
                headers={**probe.headers, "Transfer-Encoding": "chunked"},
            )
        else:
            conn.request(probe.method, probe.path, body=probe.body, headers=probe.headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def problem(probe: Probe, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with this answer to ``probe``, or None."""
    if status not in probe.expect:
        return f"status {status}, expected {sorted(probe.expect)}: {body[:300]!r}"
    if status < 300 or probe.method == "HEAD" or not probe.json_error:  # a HEAD answer has no body to check
        return None
    if headers.get("content-type", "").split(";")[0] != "application/json":
        return f"status {status} with content type {headers.get('content-type')!r}: {body[:300]!r}"
    try:
        error = json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON: {body[:300]!r}"
    if (
        not isinstance(error, dict)
        or not isinstance(error.get("code"), str)
        or not isinstance(error.get("message"), str)
    ):
        return f"status {status} without a JSON {{code, message}}: {body[:300]!r}"
    return None


class PingPoller(threading.Thread):
    """GET /ping every 50 ms until stopped; every result (status, or the exception's name) is kept."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.results, self.slowest = port, Counter(), 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            started = time.monotonic()
            try:
                result: int | str = request(self.port, "GET", "/ping", timeout=10)[0]
            except OSError as exc:
                result = type(exc).__name__
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.results[result] += 1


def test_ten_thousand_malformed_requests_never_get_a_5xx_nor_take_the_server_down(tmp_path: Path, start_server) -> None:
    store = write_store(tmp_path / "store", {"digits": VERSIONS})
    server = start_server(store, args=("--model-store", str(store)))
    server.wait_ready()

    probes = corpus(PROBES, seed=0)
    lock = threading.Lock()
    by_class: Counter[str] = Counter()
    by_kind: Counter[tuple[str, int | str]] = Counter()
    problems: list[tuple[str, str]] = []

    def work() -> None:
        while True:
            with lock:
                probe = next(probes, None)
            if probe is None:
                return
            try:
                status, headers, body = send(server.port, probe)
                wrong = problem(probe, status, headers, body)
                outcome: int | str = status
            except OSError as exc:  # the server hung up or never answered: as bad as a 5xx
                wrong, outcome = f"{type(exc).__name__}: {exc}", type(exc).__name__
            with lock:
                by_class[f"{outcome // 100}xx" if isinstance(outcome, int) else outcome] += 1
                by_kind[(probe.kind, outcome)] += 1
                if wrong:
                    problems.append((probe.kind, f"{probe.describe()[:400]}\n    -> {wrong}"))

    poller = PingPoller(server.port)
    poller.start()
    started = time.monotonic()
    workers = [threading.Thread(target=work, daemon=True) for _ in range(CONCURRENCY)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=170)
    elapsed = time.monotonic() - started
    poller.done.set()
    poller.join(timeout=15)
    assert not any(worker.is_alive() for worker in workers), "the corpus did not finish within 170 s"

    summary = (
        f"{sum(by_class.values())} requests in {elapsed:.1f} s, by class {dict(sorted(by_class.items()))}; "
        f"/ping: {dict(poller.results)}, slowest {poller.slowest * 1000:.0f} ms\nby kind: "
        + ", ".join(f"{kind} {outcome}: {n}" for (kind, outcome), n in sorted(by_kind.items(), key=str))
    )
    print(summary)
    assert sum(by_class.values()) == PROBES, summary
    assert server.proc.poll() is None, f"the server died:\n{server.output()[-3000:]}\n{summary}"
    if problems:
        kinds = Counter(kind for kind, _ in problems)
        first = {}  # the first three of each kind
        for kind, text in problems:
            first.setdefault(kind, []).append(text)
        examples = "\n".join(text for texts in first.values() for text in texts[:3])
        raise AssertionError(f"{len(problems)} wrong answers, by kind {dict(kinds)}; examples:\n{examples}\n{summary}")
    assert by_class["5xx"] == 0, summary
    assert set(poller.results) == {200}, summary
    assert poller.results[200] >= 10, summary
    assert "Traceback" not in server.output(), server.output()[-5000:]

    # Afterwards every version still answers right, in JSON, .npy and PNG alike.
    batch = images(5, seed=1)
    for path, version in [
        ("/invocations", "2"),
        ("/predictions/digits", "2"),
        ("/predictions/digits/1", "1"),
        ("/predictions/digits/2", "2"),
    ]:
        status, body = predict(server.port, path, batch)
        assert status == 200, body
        expected = reference_indices(store / "digits" / version, batch)
        assert [p["index"] for p in body["predictions"]] == expected, (path, body)
        assert [p["label"] for p in body["predictions"]] == [str(i) for i in expected]
    buffer = io.BytesIO()
    np.save(buffer, batch.astype(np.uint8))
    status, headers, raw = request(
        server.port, "POST", "/predictions/digits/1", buffer.getvalue(), {"Content-Type": NPY, "Accept": NPY}
    )
    assert status == 200, raw[:300]
    assert headers["content-type"] == NPY
    probabilities = np.load(io.BytesIO(raw))
    assert probabilities.argmax(axis=1).tolist() == reference_indices(store / "digits" / "1", batch)

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(batch[0, 0].astype(np.uint8), "L").save(png, format="PNG")
    status, _, raw = request(server.port, "POST", "/invocations", png.getvalue(), {"Content-Type": PNG})
    assert status == 200, raw[:300]
    assert json.loads(raw)["predictions"][0]["index"] == reference_indices(store / "digits" / "2", batch[:1])[0]
