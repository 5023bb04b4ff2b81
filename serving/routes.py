"""The inference port's one routing table, and the router that serves it.

- ``GET /ping``: 503 until every model is loaded and warmed up, then 200;
- ``POST /invocations``: the default model (SageMaker);
- ``POST|PUT /predictions/{model}[/{version}]`` (TorchServe; PUT because ``curl -T file`` sends one);
- ``GET /metrics``, ``GET /openapi.json``;
- the Open Inference Protocol's ``/v2`` health, metadata and ``POST .../infer`` (serving/oip.py).

The router matches a path by its segments (a dict lookup and a few string compares: no regular
expression, no middleware stack), which keeps the inference routes as cheap as a hand-written check.
A path no route has is a 404; a path whose routes take other methods is a 405 with ``Allow``; both in
the JSON error shape of serving/errors.py. ``HEAD`` is taken wherever ``GET`` is, as Starlette does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving import openapi
from serving.errors import HttpError, InvalidInput, error, response_for, route_error
from serving.inference import OIP, infer

if TYPE_CHECKING:
    from serving.state import Served, ServerState

log = logging.getLogger("serving")

SERVER_VERSION = "0.1.0"
"""What GET /v2 reports (pyproject.toml's version)."""

Endpoint = Callable[["ServerState", Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    """Starlette's template syntax (``/predictions/{model_name}``); also the route's label in /metrics."""
    methods: tuple[str, ...]
    endpoint: Endpoint
    segments: tuple[str | None, ...] = field(init=False)
    """Each path segment: its literal text, or None for a parameter."""
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.methods:  # the router reads "no method matched" from the methods a path takes
            raise ValueError(f"route {self.path} takes no method")
        parts = self.path.split("/")
        object.__setattr__(self, "segments", tuple(None if p.startswith("{") else p for p in parts))
        object.__setattr__(self, "names", tuple(p[1:-1] for p in parts if p.startswith("{")))
        if "GET" in self.methods and "HEAD" not in self.methods:
            object.__setattr__(self, "methods", (*self.methods, "HEAD"))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The path parameters when the path's ``parts`` fit this route (a parameter is a non-empty segment)."""
        values = []
        for segment, part in zip(self.segments, parts, strict=True):  # the router keys routes by length
            if segment is None:
                if not part:
                    return None
                values.append(part)
            elif segment != part:
                return None
        return dict(zip(self.names, values, strict=True))


class Router:
    """ASGI: one request to the route that takes its path and method; a JSON 404/405 otherwise."""

    def __init__(self, state: ServerState, routes: Sequence[Route]) -> None:
        self.state = state
        self._routes: dict[tuple[int, str | None], list[Route]] = {}
        for route in routes:
            self._routes.setdefault((len(route.segments), route.segments[1]), []).append(route)

    def resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """(route, path parameters, []) for the route taking this path and method; else (the first route
        with this path, or None for a 404; {}; the methods the path takes)."""
        parts = path.split("/")
        first, allowed = None, []
        for route in self._routes.get((len(parts), parts[1] if len(parts) > 1 else None), ()):
            params = route.match(parts)
            if params is None:
                continue
            if method in route.methods:
                return route, params, []
            first = first or route
            allowed += [m for m in route.methods if m not in allowed]
        return first, {}, allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await self._respond(scope, receive)
            await response(scope, receive, tracking_send)
        except Exception:  # what Starlette's ServerErrorMiddleware would do: a 500, and the server goes on
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await error(500, "internal_error", "the server failed on this request; see its log")(
                    scope, receive, send
                )

    async def _respond(self, scope: dict[str, Any], receive: Any) -> Response:
        method, path = scope["method"], scope["path"]
        route, params, allowed = self.resolve(method, path)
        if route is None or allowed:
            if route is not None:
                scope["deepcloud.route"] = route.path
            return response_for(route_error(method, path, allowed))
        scope["deepcloud.route"] = route.path
        scope["path_params"] = params
        return await route.endpoint(self.state, Request(scope, receive))


# ---------------------------------------------------------------------------------------------- endpoints


async def ping(state: ServerState, request: Request) -> Response:
    if not state.ready:
        return JSONResponse({"status": "Loading"}, status_code=503)
    failed = [s.label for vs in state.models.values() for s in vs.values() if s.runner.kind == "failed"]
    # Still 200: the other models serve, and a failed one answers 500 with a request id (see the log).
    return JSONResponse({"status": "Healthy", "failed": failed} if failed else {"status": "Healthy"})


async def invocations(state: ServerState, request: Request) -> Response:
    return await infer(state, request, None, None)


async def predictions(state: ServerState, request: Request) -> Response:
    params = request.path_params
    return await infer(state, request, params["model_name"], params.get("model_version"))


async def oip_infer(state: ServerState, request: Request) -> Response:
    params = request.path_params
    return await infer(state, request, params["model_name"], params.get("model_version"), OIP)


async def metrics(state: ServerState, request: Request) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def openapi_document(state: ServerState, request: Request) -> Response:
    models = {name: sorted(versions) for name, versions in state.models.items()}
    image = any(s.runner.image_input for vs in state.models.values() for s in vs.values())
    return JSONResponse(openapi.document(models, image))


async def v2_server(state: ServerState, request: Request) -> Response:
    from serving import oip

    return JSONResponse({"name": "deepcloud", "version": SERVER_VERSION, "extensions": list(oip.EXTENSIONS)})


async def v2_live(state: ServerState, request: Request) -> Response:
    return JSONResponse({"live": True})


async def v2_ready(state: ServerState, request: Request) -> Response:  # the spec: 200 for true, a 4xx for false
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 400)


def _v2_find(state: ServerState, request: Request) -> Served:
    """The torch.export model the path names; ModelNotFound or InvalidInput otherwise."""
    params = request.path_params
    served = state.find(params["model_name"], params.get("model_version"))
    if served.runner.artifact is None:
        raise InvalidInput(
            f"model {served.label} is a {served.runner.kind} model: "
            "the Open Inference Protocol serves torch.export artifacts only"
        )
    return served


async def v2_model(state: ServerState, request: Request) -> Response:
    from serving import oip

    try:
        served = _v2_find(state, request)
    except HttpError as exc:
        return OIP.error(exc, None, None)
    assert served.runner.artifact is not None  # _v2_find refused the others
    return JSONResponse(oip.metadata(served.name, state.versions(served.name), served.runner.artifact))


async def v2_model_ready(state: ServerState, request: Request) -> Response:
    try:
        served = _v2_find(state, request)
    except HttpError as exc:
        return OIP.error(exc, None, None)
    return JSONResponse({"name": served.name, "ready": served.runner.kind != "failed"})


ROUTES = (
    Route("/ping", ("GET",), ping),
    Route("/invocations", ("POST",), invocations),
    Route("/predictions/{model_name}", ("POST", "PUT"), predictions),
    Route("/predictions/{model_name}/{model_version}", ("POST", "PUT"), predictions),
    Route("/metrics", ("GET",), metrics),
    Route("/openapi.json", ("GET",), openapi_document),
    Route("/v2", ("GET",), v2_server),
    Route("/v2/health/live", ("GET",), v2_live),
    Route("/v2/health/ready", ("GET",), v2_ready),
    Route("/v2/models/{model_name}", ("GET",), v2_model),
    Route("/v2/models/{model_name}/ready", ("GET",), v2_model_ready),
    Route("/v2/models/{model_name}/infer", ("POST",), oip_infer),
    Route("/v2/models/{model_name}/versions/{model_version}", ("GET",), v2_model),
    Route("/v2/models/{model_name}/versions/{model_version}/ready", ("GET",), v2_model_ready),
    Route("/v2/models/{model_name}/versions/{model_version}/infer", ("POST",), oip_infer),
)
"""Every route of the inference port (the management API has its own port, serving/management.py)."""
