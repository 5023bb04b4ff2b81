"""HTTP routes on SageMaker's hosting contract: GET /ping, POST /invocations.

Error mapping (KServe-style): the client's mistake is a 4xx with ``{"code", "message"}``; a failure
in model code is a 500 carrying a request id, and the server keeps serving.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.artifact import Artifact
from serving.predictor import InvalidInput, decode_json, encode_response, predict

log = logging.getLogger("serving")

MAX_BODY_BYTES = 6 * 1024 * 1024
"""SageMaker's invocation payload cap."""

JSON_TYPES = ("application/json",)


@dataclass
class ServerState:
    """What the routes read: the artifact once loaded (``None`` while loading)."""

    artifact: Artifact | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    # One inference at a time: torch already spreads a forward pass over all cores.
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))


def error(status: int, code: str, message: str, request_id: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": code, "message": message}
    if request_id:
        body["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-Id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (checked on the header first, then while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _infer(artifact: Artifact, body: bytes) -> dict:
    return encode_response(artifact, predict(artifact, decode_json(body, artifact)))


def build_app(state: ServerState, lifespan=None) -> Starlette:
    async def ping(request: Request) -> Response:
        if state.artifact is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "healthy"})

    async def invocations(request: Request) -> Response:
        request_id = request.headers.get("x-amzn-requestid") or uuid.uuid4().hex
        artifact = state.artifact
        if artifact is None:
            return error(503, "not_ready", "the model is still loading: retry after /ping answers 200",
                         request_id, {"Retry-After": "1"})
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in JSON_TYPES:
            return error(415, "unsupported_media_type",
                         f"content type {media_type or '(none)'!r} is not supported: send application/json",
                         request_id)
        body = await _read_body(request, state.max_body_bytes)
        if body is None:
            return error(413, "payload_too_large",
                         f"body is larger than {state.max_body_bytes} bytes: send fewer instances per request",
                         request_id)
        try:
            result = await anyio.to_thread.run_sync(_infer, artifact, body, limiter=state.limiter)
        except InvalidInput as exc:
            return error(400, "invalid_input", str(exc), request_id)
        except Exception:
            log.exception("inference failed request_id=%s", request_id)
            return error(500, "internal_error", f"inference failed; see the server log for request {request_id}",
                         request_id)
        return JSONResponse(result, headers={"X-Request-Id": request_id})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                     f"{request.method} {request.url.path}: {exc.detail}")

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
