"""The access log: one JSON object per request on stderr, written without slowing the requests down.

Lines go into a 64 KiB buffer over stderr's file descriptor and are flushed every half second by a
background thread, and on close: a write syscall per request is a visible share of a tiny model's
request (docs/serving.md, "Measured").
The line is built with an f-string; the strings a client can choose (path, request id, and the client
address, which uvicorn takes from ``X-Forwarded-For`` when the peer is a trusted proxy) go through
``json.dumps``, so none of them can end the record or forge another.
"""

from __future__ import annotations

import io
import json
import threading
import time
from typing import TextIO


class AccessLog:
    def __init__(self, stream: TextIO, interval: float = 0.5) -> None:
        raw = io.FileIO(stream.fileno(), "w", closefd=False)
        self._out = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 16), write_through=False)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._interval = interval
        threading.Thread(target=self._flush_periodically, name="access-log", daemon=True).start()

    def request(
        self, method: str, path: str, status: int, seconds: float, model: str, request_id: str, client: str
    ) -> None:
        line = (
            f'{{"ts":{time.time():.3f},"method":"{method}","path":{json.dumps(path)},"status":{status},'
            f'"ms":{seconds * 1000:.3f},"model":"{model}","request_id":{json.dumps(request_id)},'
            f'"client":{json.dumps(client)}}}\n'
        )
        with self._lock:
            self._out.write(line)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()
