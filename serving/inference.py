"""One inference request, in small steps: admit it, read and decode its body, run it, encode the answer.

Checks run cheapest first, so nothing reaches model code that a header already rules out: not loaded yet
503, unknown model 404, declared body over the limit 413, content type 415, Accept 406, then the body is
read (413 again if it grows past the limit), decoded (400), queued (503 when full) and answered (504 past
the timeout). Each failure is an :class:`~serving.errors.HttpError` raised where it is found and answered
in one place, :meth:`Dialect.failure`; anything else raised by model code is a 500 carrying a request id,
and the server keeps serving.

A :class:`Dialect` is how a family of routes reads a request and writes its answer and its errors: the
runner's own (SageMaker's /invocations and TorchServe's /predictions), or the Open Inference Protocol's
(serving/oip.py, imported on first use so numpy stays off the path from binding the port to /ping).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from serving.errors import (
    HttpError,
    InternalError,
    InvalidInput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
    response_for,
)

if TYPE_CHECKING:
    from serving.limits import BodyBudget
    from serving.runner import Reply, Runner
    from serving.state import Served, ServerState

log = logging.getLogger("serving")

SAGEMAKER_TRITON = "application/vnd.sagemaker-triton.binary+json"
"""serving/oip.py's content type of Triton's SageMaker mode (a test checks they agree)."""
INLINE_DECODE_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop (cheaper than a thread hop); larger ones off it,
where a 6 MB JSON body's parse does not hold up every other request."""

# A random prefix per process and a counter: unique, without uuid4's getrandom() syscall on every request.
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_ids = itertools.count(1)


def _new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):016x}"


class Dialect:
    """The runner's own: its decode and encode, and ``{"code", "message"}`` error bodies."""

    def failure(self, exc: Exception, request_id: str, model: str | None) -> Response:
        """The one mapping from an exception to its response: an HttpError's status, code and headers;
        anything else a logged 500 that names the request."""
        if not isinstance(exc, HttpError):
            log.exception("inference failed model=%s request_id=%s", model, request_id, exc_info=exc)
            exc = InternalError(f"inference failed; see the server log for request {request_id}")
        return self.error(exc, request_id, model)

    def error(self, exc: HttpError, request_id: str, model: str | None) -> Response:
        return response_for(exc, request_id, model)

    def check(self, runner: Runner, media_type: str, accept: str | None) -> None:
        """Before the body is read: 415 and 406 from the headers alone."""
        if runner.request_types is not None and media_type not in runner.request_types:
            raise UnsupportedMediaType(
                f"content type {media_type or '(none)'!r} is not supported: send one of "
                f"{', '.join(runner.request_types)}"
            )
        runner.check_accept(accept)

    def decode(
        self, runner: Runner, body: bytes, media_type: str, request: Request, request_id: str
    ) -> tuple[Any, Any]:
        """(what the batcher runs, what encode needs besides the result)."""
        # Only handler-style models read the headers: no per-request copy of them for tensor models.
        headers = {**request.headers, "x-request-id": request_id} if runner.reads_headers else {}
        return runner.decode(body, media_type, headers), None

    def encode(self, served: Served, result: Any, context: Any, accept: str | None) -> Reply:
        return served.runner.encode(result, accept)


class OipDialect(Dialect):
    """The Open Inference Protocol (serving/oip.py): ``{"error": ...}`` bodies, and tensors in and out."""

    def error(self, exc: HttpError, request_id: str | None, model: str | None) -> Response:
        headers = {**exc.headers, **({"X-Request-Id": request_id} if request_id else {})}
        return JSONResponse({"error": exc.detail(model)}, status_code=exc.status, headers=headers)

    def check(self, runner: Runner, media_type: str, accept: str | None) -> None:
        if runner.artifact is None:
            raise InvalidInput(
                f"a {runner.kind} model is served on /predictions and /invocations only: the Open "
                "Inference Protocol serves torch.export artifacts, whose tensors the manifest describes"
            )

    def decode(
        self, runner: Runner, body: bytes, media_type: str, request: Request, request_id: str
    ) -> tuple[Any, Any]:
        from serving import oip

        assert runner.artifact is not None  # check() refused the others
        content_type = request.headers.get("content-type", "")
        decoded = oip.decode(body, media_type, content_type, request.headers, runner.artifact)
        return decoded.batch, decoded

    def encode(self, served: Served, result: Any, context: Any, accept: str | None) -> Reply:
        from serving import oip
        from serving.runner import Reply

        assert served.runner.artifact is not None
        body, headers, media_type = oip.encode(context, result, served.runner.artifact, served.name, served.version)
        return Reply(body, media_type, headers=headers)


RUNNER, OIP = Dialect(), OipDialect()


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def infer(
    state: ServerState, request: Request, name: str | None, version: str | None, dialect: Dialect = RUNNER
) -> Response:
    """The answer to one inference request for model ``name`` (None: the default model) at ``version``."""
    headers = request.headers
    request_id = headers.get("x-amzn-requestid") or headers.get("x-request-id") or _new_request_id()
    if name is None and _media_type(request) == SAGEMAKER_TRITON:
        dialect = OIP  # Triton's SageMaker mode: an Open Inference Protocol body on /invocations
    held = [0]  # body bytes this request holds in state.bodies: reserved as read, released with the answer
    model = name
    try:
        served = _admit(state, request, name, version, request_id)
        model = served.label
        payload, context = await _decode(state, request, served, dialect, held, request_id)
        result = await served.batcher.submit(payload, state.timeout)
        reply = dialect.encode(served, result, context, request.headers.get("accept"))
    except ClientDisconnect:  # the client went, or a limit closed the connection: nothing to answer or log
        return Response(status_code=400)
    except Exception as exc:
        return dialect.failure(exc, request_id, model)
    finally:
        state.bodies.release(held[0])
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.media_type,
        headers={**reply.headers, "X-Request-Id": request_id},
    )


def _admit(state: ServerState, request: Request, name: str | None, version: str | None, request_id: str) -> Served:
    """The model to run, once the server is ready and the declared body fits."""
    if not state.ready:
        raise NotReady("the model is still loading: retry after /ping answers 200")
    served = state.find(name, version)
    request.scope["deepcloud.model"] = served.label
    request.scope["deepcloud.request_id"] = request_id
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body_bytes:
        raise _too_large(state)
    return served


def _too_large(state: ServerState) -> PayloadTooLarge:
    return PayloadTooLarge(f"body is larger than {state.max_body_bytes} bytes: send fewer instances per request")


async def _decode(
    state: ServerState, request: Request, served: Served, dialect: Dialect, held: list[int], request_id: str
) -> tuple[Any, Any]:
    """The header checks, then the body read and decoded: (what the batcher runs, what encode needs)."""
    runner = served.runner
    media_type = _media_type(request)
    dialect.check(runner, media_type, request.headers.get("accept"))
    body = await _read_body(request, state.max_body_bytes, state.bodies, held)
    if body is None:
        raise _too_large(state)
    if len(body) <= INLINE_DECODE_BYTES:
        return dialect.decode(runner, body, media_type, request, request_id)
    return await asyncio.to_thread(dialect.decode, runner, body, media_type, request, request_id)


async def _read_body(request: Request, limit: int, bodies: BodyBudget, held: list[int]) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (checked on the header first, then while reading).
    Every byte read is held in ``bodies`` (``held[0]`` counts them); Overloaded when that budget is spent."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        grow = max(0, size - held[0])
        if grow and not bodies.reserve(grow):
            raise Overloaded(f"the server holds {bodies.limit} bytes of request bodies already")
        held[0] += grow
        chunks.append(chunk)
    return b"".join(chunks)
