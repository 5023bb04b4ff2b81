"""Limits on what one client can make the server hold: connections, header bytes, time, body bytes.

uvicorn's httptools protocol keeps every header a client sends, for as long as it takes to send them, and
never times out a connection that is still sending its request: 96 MiB of headers on one unfinished
request, or 40 connections each trickling a 6 MiB body, stay in memory for as long as the client likes.
:func:`protocol` returns uvicorn's protocol with these limits added, each a server setting
(serving/config.py) with a safe default:

- **headers**: the request line may take ``max_request_line_bytes`` (else 414) and the whole head, request
  line and headers, ``max_header_bytes`` and ``max_headers`` lines (else 431). Bytes past the limit are never
  handed to the parser, so a flood costs at most the limit;
- **time**: the head must arrive within ``header_timeout`` seconds of the connection (or of the previous
  response, on a kept-alive connection) and the body within ``body_timeout`` seconds of the head (else 408):
  slowloris clients are closed, not waited for;
- **connections**: at most ``max_connections`` at once. A new connection past the limit closes the oldest
  one that is not running a request (still sending its head, or idle between requests) with a 503, so a
  flood of idle or slow connections cannot shut out ``/ping``; only when every connection is running a
  request is the new one refused (503);
- **bodies**: :class:`BodyBudget` caps the bytes of request bodies the server holds at once, from the first
  byte read to the response (serving/inference.py answers 503 past it).

Every refusal is answered with the status and a JSON ``{"code", "message"}`` body, counted in
``deepcloud_rejected_total{reason}`` and logged (one line per reason at most every 10 s, with a count).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("serving.limits")


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 512
    """Open connections at once; past it the oldest idle one is closed (503), else the new one."""
    max_request_line_bytes: int = 8 * 1024
    """Bytes of the request line (method, target, version); past it 414."""
    max_header_bytes: int = 32 * 1024
    """Bytes of the request line and headers together; past it 431."""
    max_headers: int = 100
    """Header lines per request; past it 431."""
    header_timeout: float = 10.0
    """Seconds to send the request line and headers; past it 408."""
    body_timeout: float = 30.0
    """Seconds to send the body once the headers are in; past it 408."""


class BodyBudget:
    """Bytes of request bodies held at once, across all connections (the event loop's thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def reserve(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


class _Refused(Exception):
    """Raised from a parser callback: (status, reason, message) to answer before closing."""


class _Throttled:
    """One warning per reason at most every ``interval`` seconds, with how many happened since."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last: dict[str, float] = {}
        self.counts: collections.Counter[str] = collections.Counter()

    def warn(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if reason not in self.last or now - self.last[reason] >= self.interval:
            log.warning("%s: %s (%d time(s) since the last such line)", reason, message, self.counts.pop(reason))
            self.last[reason] = now


HEAD_SLICE = 1024
"""While a head is arriving, bytes are fed to the parser this many at a time, so the head's size is known
to this granularity whatever the read sizes and however requests follow one another on a connection."""
LINGER_S, LINGER_BYTES = 1.0, 256 * 1024
"""How long and how much a refused connection keeps reading (and dropping) of the client's bytes before it
closes, so the client reads the answer before the connection ends."""
SWEEP_S = 0.25
"""How often the deadlines of the connections are checked: a timeout fires up to this much late."""
MAX_PIPELINED = 1
"""Requests a client may queue behind the one running on its connection (HTTP/1.1 pipelining)."""


class _Shared:
    """What the connections of one server share: its limits, its idle and receiving connections, the sweep."""

    def __init__(self, limits: Limits, on_reject: Callable[[str], None]) -> None:
        self.limits, self.on_reject = limits, on_reject
        self.warnings = _Throttled()
        self.idle: collections.OrderedDict[Any, None] = collections.OrderedDict()
        """Connections running no request (connecting, sending a head, kept alive between requests), oldest
        first: the first a new connection past the limit closes."""
        self.receiving: collections.OrderedDict[Any, None] = collections.OrderedDict()
        """Connections whose request body is still arriving, oldest first: closed next, so slow bodies cannot
        shut out /ping either. A request whose body is in is never closed to make room."""
        self.framing = 64 * 1024  # chunk headers and trailers a request may add to its body, plus 1/8 of the body
        self.messages = {
            "header_timeout": f"the request line and headers did not arrive within {limits.header_timeout:g} s",
            "body_timeout": f"the request body did not arrive within {limits.body_timeout:g} s",
        }
        self.sweeping: list[Any] = []  # the scheduled sweep, while connections have deadlines

    def schedule_sweep(self, loop: Any, connections: Any) -> None:
        if not self.sweeping:
            self.sweeping.append(loop.call_later(SWEEP_S, self.sweep, loop, connections))

    def sweep(self, loop: Any, connections: Any) -> None:  # the event loop, and uvicorn's set of protocols
        """Refuse (408) every connection past its deadline; again in SWEEP_S while any has one."""
        self.sweeping.clear()
        now, pending = loop.time(), False
        for connection in list(connections):
            deadline = getattr(connection, "_deadline", None)
            if deadline is None:
                continue
            if deadline <= now:
                reason = connection._deadline_reason
                connection._refuse(408, reason, self.messages[reason])
            else:
                pending = True
        if pending:
            self.schedule_sweep(loop, connections)


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``shared`` (one per server: see :func:`protocol`)."""

    shared: ClassVar[_Shared]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # from the connection or the end of a message to the end of the next head
        self._head_bytes = self._header_lines = 0
        self._after_head = self._body_bytes = 0  # fed since the head ended; delivered as body
        self._refused = False
        self._linger = 0
        self._deadline: float | None = None  # loop time past which the sweep refuses the connection
        self._deadline_reason = ""

    # ---------------------------------------------------------------------------------- connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.shared.limits.max_connections:
            oldest = next(iter(self.shared.idle), None) or next(iter(self.shared.receiving), None)
            if oldest is None:
                self._refuse(
                    503,
                    "too_many_connections",
                    f"the server holds {self.shared.limits.max_connections} connections, all running requests: "
                    "retry shortly",
                )
                return
            oldest._refuse(
                503,
                "too_many_connections",
                f"the server is at its {self.shared.limits.max_connections}-"
                "connection limit and closed this connection, which was running no request",
            )
        self.shared.idle[self] = None
        self._expire(self.shared.limits.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.idle.pop(self, None)
        self.shared.receiving.pop(self, None)
        self._deadline = None
        super().connection_lost(exc)

    # ---------------------------------------------------------------------------------- bytes

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering: drop what still comes, up to LINGER_BYTES, then close
            self._linger -= len(data)
            if self._linger < 0:
                self.transport.close()
            return
        view = memoryview(data)
        while view and not self._refused:
            if self._in_head:  # a slice at a time: the head's size is known whatever the read sizes
                if self._deadline is None:  # bytes between requests (even bare CRLFs) start the clock
                    self._expire(self.shared.limits.header_timeout, "header_timeout")
                piece, view = view[:HEAD_SLICE], view[HEAD_SLICE:]
                self._head_bytes += len(piece)
                if self._head_bytes > self.shared.limits.max_header_bytes:
                    self._refuse(
                        431,
                        "header_too_large",
                        f"the request line and headers exceed {self.shared.limits.max_header_bytes} bytes",
                    )
                    return
                self._feed(bytes(piece))
                continue
            before = self._body_bytes
            self._feed(bytes(view))
            self._after_head += len(view) - (self._body_bytes - before)  # self.shared.framing, trailers, next heads
            if self._after_head > self.shared.framing + self._body_bytes // 8 and not self._refused:
                self._refuse(
                    400,
                    "framing_too_large",
                    f"the body's chunk headers and trailers exceed {self.shared.framing} bytes plus an eighth of "
                    "the body",
                )
            return

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, with a JSON 400 and our own refusals from the parser callbacks."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # httptools wraps what a callback raises
            if isinstance(exc.__context__, _Refused):
                self._refuse(*exc.__context__.args)
            else:
                raise
        except httptools.HttpParserUpgrade:
            # no WebSocket routes: the request is served as plain HTTP (uvicorn warns twice per request)
            self.shared.warnings.warn("upgrade", "an Upgrade header was ignored: this server has no WebSocket routes")
        except httptools.HttpParserError as exc:
            self._refuse(400, "bad_request", f"the request is not valid HTTP/1.1 ({exc})")

    # ---------------------------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:
            self._expire(self.shared.limits.header_timeout, "header_timeout")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.shared.limits.max_request_line_bytes:
            raise _Refused(
                414, "uri_too_long", f"the request target exceeds {self.shared.limits.max_request_line_bytes} bytes"
            )

    def on_headers_complete(self) -> None:
        # The count is checked here, not per header: the head's bytes are bounded already, so counting at
        # the end costs nothing per header and lets no more than max_header_bytes in.
        if len(self.headers) > self.shared.limits.max_headers:
            raise _Refused(
                431, "too_many_headers", f"the request has more than {self.shared.limits.max_headers} headers"
            )
        running = self.cycle is not None and not self.cycle.response_complete
        self._in_head, self._head_bytes, self._after_head, self._body_bytes = False, 0, 0, 0
        self._header_lines = len(self.headers)
        self.shared.idle.pop(self, None)
        if not running:
            self.shared.receiving[self] = None
        elif len(self.pipeline) >= MAX_PIPELINED:
            raise _Refused(
                503,
                "too_many_pipelined",
                f"more than {MAX_PIPELINED} request(s) queued behind "
                "the one running on this connection: wait for the answers",
            )
        self._expire(self.shared.limits.body_timeout, "body_timeout")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if len(self.headers) != self._header_lines:  # uvicorn's on_header added a chunked body's trailers
            raise _Refused(400, "trailers_not_accepted", "this server takes no trailers after a chunked body")
        self._deadline = None
        self.shared.receiving.pop(self, None)
        self._in_head, self._head_bytes = True, 0  # what comes next on this connection is a new head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self.shared.idle[self] = None  # kept alive: uvicorn's keep-alive timeout closes it if nothing comes

    # ---------------------------------------------------------------------------------- refusing

    def _expire(self, seconds: float, reason: str) -> None:
        """Refuse with 408 ``reason`` unless the head or body is in within ``seconds``: the connection's
        deadline, which one sweep a second checks for every connection (no timer per request)."""
        self._deadline, self._deadline_reason = self.loop.time() + seconds, reason
        self.shared.schedule_sweep(self.loop, self.connections)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` (unless a response has begun) and close the connection."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._deadline = None
        self.shared.idle.pop(self, None)
        self.shared.receiving.pop(self, None)
        self.shared.on_reject(reason)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        self.shared.warnings.warn(reason, f"{message} (last from {client})")
        cycle = self.cycle
        running = cycle is not None and not cycle.response_complete
        # the request arriving has an answer already (begun, or sent before its body was all in): no second one
        answered = cycle is not None and cycle.response_started and not (self._in_head and not running)
        if not answered:
            body = json.dumps({"code": reason, "message": message}).encode()
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n",
                        *([b"retry-after: 1\r\n"] if status == 503 else []),
                        b"\r\n",
                        body,
                    ]
                )
            )
        if running:  # the running request sees a disconnect; what it sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        # A lingering close, as nginx does: closing with the client's bytes unread makes the kernel reset the
        # connection, and the client may lose the answer. Send FIN after the answer, read and drop what
        # still comes (data_received ignores it now) for up to a second, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = LINGER_BYTES
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def protocol(limits: Limits, on_reject: Callable[[str], None] = lambda reason: None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with ``limits`` enforced; ``on_reject(reason)`` counts refusals.
    A class per server, since uvicorn takes a class: its connections share one :class:`_Shared`."""
    return type("LimitedProtocol", (LimitedProtocol,), {"shared": _Shared(limits, on_reject)})
