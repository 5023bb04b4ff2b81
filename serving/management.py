"""The management API: off by default, on its own port, every call with a bearer token.

Turned on by ``--management-port`` (or ``DEEPCLOUD_MANAGEMENT_PORT``); binds 127.0.0.1 unless
``--management-host`` says otherwise. The token is read from ``--management-token-file``; when that file
does not exist a new random token is written there (mode 0600, via a temporary name) and only the file's
path is logged, never the token. A missing or wrong token is a 401; with the API off its port is closed
and the inference port has no management route (404).

TorchServe's management API shape, without its history of holes (CVE-2023-43654: registration from
arbitrary URLs; CVE-2024-35198: the allow-list bypassed with ``..``):

- ``GET /models``, ``GET /models/{name}``, ``GET /models/{name}/{version}``: list and describe;
- ``POST /models?url=<path>[&model_name=<name>]``: register from a path **inside the model store**, and
  nothing else: no URLs of any scheme, no absolute paths, no ``..``, no symlink out of the store;
- ``PUT /models/{name}/{version}/set-default``;
- ``DELETE /models/{name}/{version}``: unregister (requests already queued for it get 503).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.errors import Conflict, InvalidRegistration, Unauthorized, json_api, response_for
from serving.state import LoadedModel, ServerState, retire_model, serve_model
from serving.store import NAME, LayoutError, ModelRef, plan_one

if TYPE_CHECKING:
    from serving.runner import Runner

log = logging.getLogger("serving")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def ensure_token(path: Path) -> str:
    """The token in ``path``, or a new one written there with mode 0600 (never printed)."""
    if path.is_file():
        token = path.read_text().strip()
        if len(token) < 16:
            raise ValueError(
                f"management token file {path} holds fewer than 16 characters: put a long random "
                "token in it, or delete it to have one generated"
            )
        if path.stat().st_mode & 0o077:
            log.warning("management token file %s is readable by others: chmod 600 it", path)
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("management API token written to %s (mode 0600)", path)
    return token


def store_path(store: Path | None, url: str) -> Path:
    """The path a registration names, inside the model store, or ValueError saying why not."""
    if store is None:
        raise ValueError("registration needs the server started with --model-store")
    if not url:
        raise ValueError("give url=<path of an artifact inside the model store>")
    if _SCHEME.match(url) or url.startswith("//"):
        raise ValueError(f"url {url!r} is a URL: only paths inside the model store can be registered")
    pure = PurePosixPath(url.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"url {url!r} must be a relative path inside the model store, without '..'")
    path = store / pure
    if not path.resolve().is_relative_to(store.resolve()):
        raise ValueError(f"url {url!r} leads outside the model store")
    return path


class ManagementApi:
    """The management routes over one server's state; ``load`` verifies, loads and warms up one model on
    the inference thread."""

    def __init__(self, state: ServerState, store: Path | None, load: Callable[[ModelRef], LoadedModel]) -> None:
        self.state, self.store, self.load = state, store, load
        self.lock = asyncio.Lock()  # one registration at a time: two loads of the same name must not race

    def describe(self, name: str, versions: list[str]) -> list[dict]:
        out = []
        for version in versions:
            served = self.state.models[name][version]
            runner: Runner = served.runner
            policy = served.batcher.policy
            out.append(
                {
                    "modelName": name,
                    "modelVersion": version,
                    "isDefault": self.state.defaults.get(name) == version,
                    "batchSize": policy.max_batch_size,
                    "maxBatchDelayMs": policy.max_batch_delay * 1000,
                    "queueDepth": served.batcher.depth,
                    **runner.describe(),
                }
            )
        return out

    async def list_models(self, request: Request) -> Response:
        state = self.state
        models = [
            {"modelName": name, "defaultVersion": state.defaults[name], "versions": sorted(state.models[name])}
            for name in sorted(state.models)
        ]
        return JSONResponse({"models": models})

    async def describe_model(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        served = self.state.find(name, version)
        return JSONResponse(
            self.describe(name, sorted(self.state.models[name]) if version is None else [served.version])
        )

    async def register(self, request: Request) -> Response:
        url = request.query_params.get("url", "")
        try:
            path = store_path(self.store, url)
        except ValueError as exc:
            raise InvalidRegistration(str(exc)) from None
        name = request.query_params.get("model_name") or path.name.split(".")[0]
        if not NAME.match(name):
            raise InvalidRegistration(f"model name {name!r} must be letters, digits, '_', '.' or '-'")
        async with self.lock:
            loaded = await self._load_versions(name, path, url)
        log.info("registered %s versions %s from %s", name, [m.version for m in loaded], url)
        return JSONResponse({"status": f"Model {name!r} registered", "versions": [m.version for m in loaded]})

    async def _load_versions(self, name: str, path: Path, url: str) -> list[LoadedModel]:
        """Load every version at ``path`` (all or none are served), under the registration lock."""
        assert self.store is not None  # store_path refused a registration without a store
        try:
            refs = plan_one(self.store, name, path)  # a path, never a --models string: commas are just characters
        except LayoutError as exc:
            raise InvalidRegistration(str(exc)) from None
        taken = [r.version for r in refs if r.version in self.state.models.get(name, {})]
        if taken:
            raise Conflict(f"model {name!r} version {taken[0]!r} is already registered: unregister it first")
        loop = asyncio.get_running_loop()
        loaded = []
        for ref in refs:
            try:
                loaded.append(await loop.run_in_executor(self.state.executor, self.load, ref))
            except Exception as exc:
                log.warning("registration of %s from %s failed: %s", name, url, exc)
                raise InvalidRegistration(f"{url}: {exc}") from None
        for model in loaded:
            serve_model(self.state, model, default=name not in self.state.defaults or model is loaded[-1])
        return loaded

    async def set_default(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        self.state.find(name, version)  # a 404 unless that version is loaded
        self.state.defaults[name] = version
        log.info("default version of %s is now %s", name, version)
        return JSONResponse({"status": f"Default version of {name!r} is now {version!r}"})

    async def unregister(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        await retire_model(self.state, name, version)  # a 404 unless that version is loaded
        log.info("unregistered %s:%s", name, version)
        return JSONResponse({"status": f"Model {name!r} version {version!r} unregistered"})

    def routes(self) -> list[Route]:
        return [
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models", self.register, methods=["POST"]),
            Route("/models/{name}", self.describe_model, methods=["GET"]),
            Route("/models/{name}/{version}", self.describe_model, methods=["GET"]),
            Route("/models/{name}/{version}", self.unregister, methods=["DELETE"]),
            Route("/models/{name}/{version}/set-default", self.set_default, methods=["PUT"]),
        ]


def build_management_app(
    state: ServerState, token: str, store: Path | None, load: Callable[[ModelRef], LoadedModel]
) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """The management API's ASGI app: every call checked for the bearer ``token`` first."""
    expected = f"Bearer {token}".encode()
    app = json_api(ManagementApi(state, store, load).routes())

    async def guarded(scope, receive, send) -> None:
        given = Request(scope).headers.get("authorization", "").encode() if scope["type"] == "http" else expected
        if not hmac.compare_digest(given, expected):
            refused = Unauthorized(
                "missing or wrong bearer token: send 'Authorization: Bearer "
                "<token>' with the token from the management token file"
            )
            await response_for(refused)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded
