"""The inference server's ASGI app: setup (the inference thread, the model load), then the routes.

SageMaker's hosting contract, TorchServe's inference API, the Open Inference Protocol, /metrics and
/openapi.json, all from one routing table (serving/routes.py); each inference request runs the small
steps of serving/inference.py, and every error is answered by the one mapping of serving/errors.py.
Connections to the management port go to serving/management.py; a multi-model endpoint's paths to
serving/multimodel.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from starlette.routing import Router as LifespanRouter

from serving.observe import ObservedApp
from serving.routes import ROUTES, Router
from serving.state import LoadedModel, ServerState, serve_model

if TYPE_CHECKING:
    from serving.accesslog import AccessLog

log = logging.getLogger("serving")

Loader = Callable[[], Sequence[LoadedModel]]
ASGIApp = Callable[[Any, Any, Any], Any]


def build_app(
    state: ServerState,
    load: Loader | None = None,
    on_failure: Callable[[str], None] | None = None,
    access_log: AccessLog | None = None,
    management: tuple[int, ASGIApp] | None = None,
    multi_model: tuple[Callable[[str], bool], ASGIApp] | None = None,
) -> ObservedApp:
    """The ASGI app. ``load`` runs on the inference thread at startup; its errors go to ``on_failure``.

    ``management``: (port, ASGI app) answering connections made to that local port (serving/management.py);
    every other connection gets the inference routes, which have no management route at all.
    ``multi_model``: (which paths, ASGI app) of a SageMaker multi-model endpoint (serving/multimodel.py),
    on the inference port; off unless the server runs in that mode.
    """
    lifespan = LifespanRouter(lifespan=_lifespan(state, load, on_failure))  # the lifespan protocol only
    router = Router(state, ROUTES)
    management_port, management_app = management or (None, None)
    multi_model_paths, multi_model_app = multi_model or (None, None)

    async def dispatch(scope, receive, send) -> None:
        if scope["type"] != "http":
            await lifespan(scope, receive, send)
        elif management_app is not None and (scope.get("server") or (None, None))[1] == management_port:
            await management_app(scope, receive, send)
        elif multi_model_app is not None and multi_model_paths is not None and multi_model_paths(scope["path"]):
            await multi_model_app(scope, receive, send)
        else:
            await router(scope, receive, send)

    return ObservedApp(dispatch, state.metrics, access_log)


def _lifespan(state: ServerState, load: Loader | None, on_failure: Callable[[str], None] | None):
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

    return lifespan


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
