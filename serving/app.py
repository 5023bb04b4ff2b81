"""HTTP routes: SageMaker's hosting contract and TorchServe's inference API, plus /metrics and /openapi.json.

- ``GET /ping``: 503 until every model is loaded and warmed up, then 200.
- ``POST /invocations``: the default model (SageMaker).
- ``POST /predictions/{model}`` and ``/predictions/{model}/{version}`` (TorchServe).

Error mapping (KServe-style): the client's mistake is a 4xx with ``{"code", "message"}`` that says what
was expected; a failure in model code is a 500 carrying a request id, and the server keeps serving.
Checks run cheapest first, so nothing reaches model code that a header already rules out: unknown
model 404, declared body over the limit 413, content type 415, Accept 406, then the body is read (413
again if it grows past the limit), decoded (400), queued (503 when full) and answered (504 past the
timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving import openapi
from serving.batching import Batcher, BatchPolicy, QueueFull
from serving.errors import ClientError, InvalidInput, UnsupportedMediaType
from serving.limits import BodyBudget
from serving.metrics import Metrics

if TYPE_CHECKING:
    from serving.accesslog import AccessLog
    from serving.runner import Reply, Runner

log = logging.getLogger("serving")

SAGEMAKER_TRITON = "application/vnd.sagemaker-triton.binary+json"
"""serving/oip.py's content type of Triton's SageMaker mode (a test checks they agree): oip is imported
lazily, so numpy is not on the path from binding the port to answering /ping."""
SERVER_VERSION = "0.1.0"
"""What GET /v2 reports (pyproject.toml's version)."""
MAX_BODY_BYTES = 6 * 1024 * 1024
"""SageMaker's invocation payload cap."""
DEFAULT_PENDING_BODY_BYTES = 128 * 1024 * 1024
"""What --max-pending-body-bytes defaults to: about 21 bodies of the largest size at once."""
INLINE_DECODE_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop (cheaper than a thread hop); larger ones off it."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What the loader hands over: one verified, warmed-up model and its batching policy."""

    name: str
    version: str
    runner: Runner
    policy: BatchPolicy = field(default_factory=BatchPolicy)


@dataclass(slots=True)
class Served:
    name: str
    version: str
    runner: Runner
    batcher: Batcher

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class ServerState:
    """What the routes read. ``models`` is empty until loading has finished."""

    max_body_bytes: int = MAX_BODY_BYTES
    timeout: float = 60.0
    """Seconds a request may wait for its answer (queue plus forward pass) before a 504."""
    models: dict[str, dict[str, Served]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    default_model: str | None = None
    ready: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    executor: ThreadPoolExecutor | None = None
    """The inference thread: forward passes, and model loads (startup and management registrations)."""
    bodies: BodyBudget = field(default_factory=lambda: BodyBudget(DEFAULT_PENDING_BODY_BYTES))
    """Request-body bytes held at once, from the first byte read to the response (serving/limits.py)."""

    def add(self, served: Served, default: bool = False) -> None:
        self.models.setdefault(served.name, {})[served.version] = served
        if default or served.name not in self.defaults:
            self.defaults[served.name] = served.version
        if self.default_model is None:
            self.default_model = served.name

    def remove(self, name: str, version: str) -> Served:
        served = self.find(name, version)
        versions = self.models[name]
        del versions[version]
        if not versions:
            del self.models[name], self.defaults[name]
            if self.default_model == name:
                self.default_model = next(iter(self.models), None)
        elif self.defaults[name] == version:
            self.defaults[name] = max(versions, key=_version_key)
        return served

    def find(self, name: str | None, version: str | None = None) -> Served:
        """The model to run; LookupError with the message for a 404."""
        name = self.default_model if name is None else name
        versions = self.models.get(name or "")
        if versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise LookupError(f"no model named {name!r} is loaded (loaded: {known})")
        version = self.defaults[name] if version is None else version
        if version not in versions:
            raise LookupError(f"model {name!r} has no version {version!r} (loaded: {', '.join(sorted(versions))})")
        return versions[version]


def _version_key(version: str) -> tuple[int, int | str]:
    return (1, int(version)) if version.isdigit() else (0, version)


def error(
    status: int, code: str, message: str, request_id: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"code": code, "message": message}
    if request_id:
        body["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-Id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in our JSON error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(
        exc.status_code,
        code,
        f"{request.method} {request.url.path}: {exc.detail}",
        headers=getattr(exc, "headers", None),
    )


async def _read_body(request: Request, limit: int, bodies: BodyBudget, held: list[int]) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (checked on the header first, then while reading).
    Every byte read is held in ``bodies`` (``held[0]`` counts them); QueueFull when that budget is spent."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        grow = max(0, size - held[0])
        if grow and not bodies.reserve(grow):
            raise BodiesFull(f"the server holds {bodies.limit} bytes of request bodies already")
        held[0] += grow
        chunks.append(chunk)
    return b"".join(chunks)


class BodiesFull(Exception):
    """The body budget (--max-pending-body-bytes) is spent: a 503 to retry."""


def _too_large(state: ServerState, request_id: str, codec: Codec) -> Response:
    return codec.error(
        413,
        "payload_too_large",
        f"body is larger than {state.max_body_bytes} bytes: send fewer instances per request",
        request_id,
    )


# A random prefix per process and a counter: unique, without uuid4's getrandom() syscall on every request.
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_ids = itertools.count(1)


def _new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):016x}"


class Codec:
    """How a family of routes reads a request and writes its answer and its errors. The default is the
    runner's own (SageMaker's /invocations and TorchServe's /predictions); serving/oip.py's is the Open
    Inference Protocol's."""

    def error(
        self, status: int, code: str, message: str, request_id: str | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        return error(status, code, message, request_id, headers)

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


class OipCodec(Codec):
    """The Open Inference Protocol (serving/oip.py): ``{"error": ...}`` bodies, and tensors in and out."""

    def error(
        self, status: int, code: str, message: str, request_id: str | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        return JSONResponse(
            {"error": message},
            status_code=status,
            headers={**(headers or {}), **({"X-Request-Id": request_id} if request_id else {})},
        )

    def check(self, runner: Runner, media_type: str, accept: str | None) -> None:
        if not hasattr(runner, "artifact"):
            raise InvalidInput(
                f"a {runner.kind} model is served on /predictions and /invocations only: the Open "
                "Inference Protocol serves torch.export artifacts, whose tensors the manifest describes"
            )

    def decode(
        self, runner: Runner, body: bytes, media_type: str, request: Request, request_id: str
    ) -> tuple[Any, Any]:
        from serving import oip

        decoded = oip.decode(
            body, media_type, request.headers.get("content-type", ""), request.headers, runner.artifact
        )  # type: ignore[attr-defined]
        return decoded.batch, decoded

    def encode(self, served: Served, result: Any, context: Any, accept: str | None) -> Reply:
        from serving import oip
        from serving.runner import Reply

        body, headers, media_type = oip.encode(
            context,
            result,
            served.runner.artifact,  # type: ignore[attr-defined]
            served.name,
            served.version,
        )
        return Reply(body, media_type, headers=headers)


RUNNER_CODEC, OIP_CODEC = Codec(), OipCodec()


async def _infer(
    state: ServerState, request: Request, name: str | None, version: str | None, codec: Codec = RUNNER_CODEC
) -> Response:
    request_id = request.headers.get("x-amzn-requestid") or request.headers.get("x-request-id") or _new_request_id()
    if name is None and request.headers.get("content-type", "").split(";")[0].strip().lower() == SAGEMAKER_TRITON:
        codec = OIP_CODEC  # Triton's SageMaker mode: an Open Inference Protocol body on /invocations
    if not state.ready:
        return codec.error(
            503,
            "not_ready",
            "the model is still loading: retry after /ping answers 200",
            request_id,
            {"Retry-After": "1"},
        )
    try:
        served = state.find(name, version)
    except LookupError as exc:
        return codec.error(404, "model_not_found", str(exc), request_id)
    request.scope["deepcloud.model"] = served.label
    request.scope["deepcloud.request_id"] = request_id
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body_bytes:
        return _too_large(state, request_id, codec)
    held = [0]  # body bytes this request holds in state.bodies: reserved as read, released with the answer
    try:
        return await _run(state, request, served, request_id, held, codec)
    finally:
        state.bodies.release(held[0])


async def _run(
    state: ServerState, request: Request, served: Served, request_id: str, held: list[int], codec: Codec
) -> Response:
    runner = served.runner
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    accept = request.headers.get("accept")
    try:
        codec.check(runner, media_type, accept)
        body = await _read_body(request, state.max_body_bytes, state.bodies, held)
        if body is None:
            return _too_large(state, request_id, codec)
        if len(body) <= INLINE_DECODE_BYTES:
            payload, context = codec.decode(runner, body, media_type, request, request_id)
        else:  # a 6 MB JSON body takes ~100 ms to parse: not on the loop every other request waits on
            payload, context = await asyncio.to_thread(codec.decode, runner, body, media_type, request, request_id)
        result = await served.batcher.submit(payload, state.timeout)
        reply = codec.encode(served, result, context, accept)
    except ClientError as exc:  # the client's mistake, found by our decoders or by the model's own input code
        return codec.error(exc.status, exc.code, str(exc), request_id)
    except ClientDisconnect:  # the client went, or a limit closed the connection: nothing to answer or log
        return Response(status_code=400)
    except (QueueFull, BodiesFull) as exc:
        return codec.error(
            503, "overloaded", f"model {served.label} is busy ({exc}): retry shortly", request_id, {"Retry-After": "1"}
        )
    except TimeoutError:
        return codec.error(
            504, "timeout", f"no answer within {state.timeout:g} s: send smaller batches or retry later", request_id
        )
    except Exception:
        log.exception("inference failed model=%s request_id=%s", served.label, request_id)
        return codec.error(
            500, "internal_error", f"inference failed; see the server log for request {request_id}", request_id
        )
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.media_type,
        headers={**reply.headers, "X-Request-Id": request_id},
    )


class ObservedApp:
    """ASGI wrapper: the request metrics, and one access-log line per HTTP request when a log is given."""

    def __init__(self, app: Any, metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("deepcloud.route") or getattr(scope.get("route"), "path", "unmatched")
            model = scope.get("deepcloud.model", "")
            self.metrics.observe(route, model, status[0], seconds)
            if self.access_log is not None:
                client = scope.get("client") or ("", 0)
                self.access_log.request(
                    scope["method"],
                    scope["path"],
                    status[0],
                    seconds,
                    model,
                    scope.get("deepcloud.request_id", ""),
                    client[0],
                )


Loader = Callable[[], Sequence[LoadedModel]]


def build_app(
    state: ServerState,
    load: Loader | None = None,
    on_failure: Callable[[str], None] | None = None,
    access_log: AccessLog | None = None,
    management: tuple[int, Any] | None = None,
    multi_model: tuple[Callable[[str], bool], Any] | None = None,
) -> ObservedApp:
    """The ASGI app. ``load`` runs on the inference thread at startup; its errors go to ``on_failure``.

    ``management``: (port, ASGI app) answering connections made to that local port (serving/management.py);
    every other connection gets the inference routes, which have no management route at all.
    ``multi_model``: (which paths, ASGI app) of a SageMaker multi-model endpoint (serving/multimodel.py),
    on the inference port; off unless the server runs in that mode.
    """

    async def ping(request: Request) -> Response:
        if not state.ready:
            return JSONResponse({"status": "Loading"}, status_code=503)
        failed = [s.label for vs in state.models.values() for s in vs.values() if s.runner.kind == "failed"]
        # Still 200: the other models serve, and a failed one answers 500 with a request id (see the log).
        return JSONResponse({"status": "Healthy", "failed": failed} if failed else {"status": "Healthy"})

    async def invocations(request: Request) -> Response:
        return await _infer(state, request, None, None)

    async def predictions(request: Request) -> Response:
        params = request.path_params
        return await _infer(state, request, params["model_name"], params.get("model_version"))

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    async def openapi_document(request: Request) -> Response:
        models = {name: sorted(versions) for name, versions in state.models.items()}
        image = any(s.runner.image_input for vs in state.models.values() for s in vs.values())
        return JSONResponse(openapi.document(models, image))

    # The Open Inference Protocol's health and metadata (serving/oip.py); /infer takes the fast path below.
    async def v2_server(request: Request) -> Response:
        from serving import oip

        return JSONResponse({"name": "deepcloud", "version": SERVER_VERSION, "extensions": list(oip.EXTENSIONS)})

    async def v2_live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(request: Request) -> Response:  # the spec: 200 for true, a 4xx for false
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 400)

    def v2_find(request: Request) -> Served | Response:
        params = request.path_params
        try:
            served = state.find(params["model_name"], params.get("model_version"))
        except LookupError as exc:
            return OIP_CODEC.error(404, "model_not_found", str(exc))
        if not hasattr(served.runner, "artifact"):
            return OIP_CODEC.error(
                400,
                "invalid_input",
                f"model {served.label} is a {served.runner.kind} model: "
                "the Open Inference Protocol serves torch.export artifacts only",
            )
        return served

    async def v2_model(request: Request) -> Response:
        served = v2_find(request)
        if isinstance(served, Response):
            return served
        from serving import oip

        return JSONResponse(
            oip.metadata(served.name, sorted(state.models[served.name], key=_version_key), served.runner.artifact)
        )  # type: ignore[attr-defined]

    async def v2_model_ready(request: Request) -> Response:
        served = v2_find(request)
        if isinstance(served, Response):
            return served
        return JSONResponse({"name": served.name, "ready": served.runner.kind != "failed"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        executor = ThreadPoolExecutor(1, thread_name_prefix="inference")  # torch spreads one pass over all cores
        state.executor = executor
        loading = asyncio.create_task(_start(state, load, executor, on_failure)) if load else None
        try:
            yield
        finally:
            if loading is not None:
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
            for versions in list(state.models.values()):
                for served in list(versions.values()):
                    await served.batcher.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    starlette = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            # PUT too: `curl -T file` sends one, and TorchServe's own docs use that form.
            Route("/predictions/{model_name}", predictions, methods=["POST", "PUT"]),
            Route("/predictions/{model_name}/{model_version}", predictions, methods=["POST", "PUT"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_document, methods=["GET"]),
            Route("/v2", v2_server, methods=["GET"]),
            Route("/v2/health/live", v2_live, methods=["GET"]),
            Route("/v2/health/ready", v2_ready, methods=["GET"]),
            Route("/v2/models/{model_name}", v2_model, methods=["GET"]),
            Route("/v2/models/{model_name}/ready", v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model_name}/versions/{model_version}", v2_model, methods=["GET"]),
            Route("/v2/models/{model_name}/versions/{model_version}/ready", v2_model_ready, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    starlette.router.redirect_slashes = False  # "/invocations/" is a JSON 404, not a bodiless 307
    management_port, management_app = management or (None, None)
    multi_model_paths, multi_model_app = multi_model or (None, None)

    async def dispatch(scope, receive, send) -> None:
        if scope["type"] == "http":
            if management_port is not None and (scope.get("server") or (None, None))[1] == management_port:
                await management_app(scope, receive, send)
                return
            if multi_model_paths is not None and multi_model_paths(scope["path"]):
                await multi_model_app(scope, receive, send)
                return
            if (route := _inference_route(scope)) is not None:
                # The hot path skips Starlette's middleware and router matching (~10% of a tiny model's
                # request); every other path, and every method these routes refuse, goes through Starlette.
                scope["deepcloud.route"], name, version, codec = route
                await _answer(state, scope, receive, send, name, version, codec)
                return
        await starlette(scope, receive, send)

    return ObservedApp(dispatch, state.metrics, access_log)


def _inference_route(scope) -> tuple[str, str | None, str | None, Codec] | None:
    """(route label, model, version, codec) for an inference request the fast path takes, else None."""
    path, method = scope["path"], scope["method"]
    if path == "/invocations":
        return ("/invocations", None, None, RUNNER_CODEC) if method == "POST" else None
    if path.startswith("/v2/models/") and path.endswith("/infer") and method == "POST":
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return "/v2/models/{model_name}/infer", parts[0], None, OIP_CODEC
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return "/v2/models/{model_name}/versions/{model_version}/infer", parts[0], parts[2], OIP_CODEC
        return None
    if not path.startswith("/predictions/") or method not in ("POST", "PUT"):
        return None
    parts = path[len("/predictions/") :].split("/")
    if len(parts) == 1 and parts[0]:
        return "/predictions/{model_name}", parts[0], None, RUNNER_CODEC
    if len(parts) == 2 and parts[0] and parts[1]:
        return "/predictions/{model_name}/{model_version}", parts[0], parts[1], RUNNER_CODEC
    return None


async def _answer(
    state: ServerState, scope, receive, send, name: str | None, version: str | None, codec: Codec
) -> None:
    started = [False]

    async def tracking_send(message) -> None:
        started[0] = started[0] or message["type"] == "http.response.start"
        await send(message)

    try:
        response = await _infer(state, Request(scope, receive), name, version, codec)
        await response(scope, receive, tracking_send)
    except Exception:  # what Starlette's ServerErrorMiddleware would do: a 500, and the server goes on
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        if not started[0]:
            await error(500, "internal_error", "the server failed on this request; see its log")(scope, receive, send)


def serve_model(state: ServerState, model: LoadedModel, default: bool = True) -> Served:
    """Give a loaded model its batcher and metrics and make it routable (on the event loop)."""
    assert state.executor is not None, "the app's lifespan has not started"
    served = Served(model.name, model.version, model.runner, batcher=None)  # type: ignore[arg-type]
    served.batcher = Batcher(
        model.runner.forward,
        model.policy,
        state.executor,
        on_batch=state.metrics.batch_observer(served.label),
        size=model.runner.size,
    )
    served.batcher.start()
    state.metrics.track_queue(served.label, lambda b=served.batcher: b.depth)
    state.add(served, default=default)
    return served


async def retire_model(state: ServerState, name: str, version: str, keep_history: bool = True) -> None:
    """Stop routing to a model version, then stop its batcher (queued requests get 503).
    ``keep_history``: its request counters stay in /metrics (see Metrics.forget)."""
    served = state.remove(name, version)
    await served.batcher.stop()
    state.metrics.forget(served.label, history=keep_history)


async def _start(
    state: ServerState, load: Loader, executor: ThreadPoolExecutor, on_failure: Callable[[str], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    try:
        loaded = await loop.run_in_executor(executor, load)
    except Exception as exc:
        # Imported only now: serving.artifact imports torch, which takes seconds on the event loop and would
        # hold /ping that long (the load has imported it by now, off the loop).
        from serving.artifact import ArtifactError
        from serving.store import LayoutError

        if isinstance(exc, ArtifactError | LayoutError):
            message = str(exc)
        else:
            log.exception("model load failed")
            message = f"model load failed: {type(exc).__name__}: {exc}"
    else:
        for model in loaded:
            serve_model(state, model)  # versions come in ascending order: the highest becomes the default
        state.ready = True
        state.metrics.ready.set(1)
        return
    if on_failure is not None:
        on_failure(message)
