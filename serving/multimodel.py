"""SageMaker multi-model endpoints: the container API SageMaker calls to load, list, describe, unload and
invoke the models of one endpoint, on the inference port.

The contract is AWS's "Custom Containers Contract for Multi-Model Endpoints"
(awsdocs/amazon-sagemaker-developer-guide ``doc_source/mms-container-apis.md``) and "Build Your Own
Container with Multi Model Server" (``build-multi-model-build-container.md``: SageMaker sets
``SAGEMAKER_MULTI_MODEL=true`` and needs the image label ``com.amazonaws.sagemaker.capabilities.multi-models``):

- ``POST /models`` ``{"model_name": ..., "url": "/opt/ml/models/<name>/model"}``: load; 409 when that name
  is loaded, 507 when there is no room for it (SageMaker then unloads models it chooses and retries);
- ``GET /models[?limit=N&next_page_token=T]``: ``{"models": [{"modelName", "modelUrl"}], "nextPageToken"}``;
- ``GET /models/{name}``: ``{"modelName", "modelUrl"}``, 404 when not loaded;
- ``DELETE /models/{name}``: unload, 404 when not loaded;
- ``POST /models/{name}/invoke``: inference, exactly as ``/invocations`` answers it; 404 when not loaded.
  ``X-Amzn-SageMaker-Target-Model`` (the client's ``TargetModel``) does not route it: the contract makes
  ``model_name`` an opaque key that need not equal it. ``POST /invocations`` with that header runs the
  model loaded under that name (for a local host, where one chooses the names).

Only here may a model be loaded from outside the model store, and only from inside the directory SageMaker
names (``--multi-model-dir``, ``/opt/ml/models``), links included. Loads of one name that arrive while it
loads share that one load. Models are kept under a memory budget (``--multi-model-memory-bytes``): a load
that does not fit first unloads the least recently invoked idle models; when even that leaves no room,
the answer is 507. A model counts as the larger of its files' size (known before loading) and the growth
of the process's resident memory while it loaded (measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.errors import (
    Conflict,
    InsufficientStorage,
    InvalidModel,
    InvalidRegistration,
    InvalidRequest,
    ModelNotFound,
    json_api,
)
from serving.inference import infer
from serving.state import ServerState, retire_model, serve_model
from serving.store import LayoutError, ModelRef, inside

if TYPE_CHECKING:
    from serving.state import LoadedModel

log = logging.getLogger("serving")

TARGET_MODEL = "x-amzn-sagemaker-target-model"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")
"""SageMaker's model_name is opaque (a hash in practice); our own names are a subset of this."""
VERSION = "1"
"""Each name holds one model; the server's routes still see a version, as for every other model."""
PAGE = 100
"""Models per GET /models page when the caller gives no limit."""


class NoRoom(Exception):
    """The model does not fit under the memory budget, even after unloading every idle model (507)."""


@dataclass
class Hosted:
    name: str
    url: str
    charge: int
    """Bytes counted against the budget."""


def files_bytes(path: Path) -> int:
    """The size of the files of an artifact: a floor for what loading it takes (its weights are most of it)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).stat().st_size
    return total


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 elsewhere, leaving the files' size as the charge)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_budget() -> int:
    """70 % of the memory available at startup: the rest is left to requests, batches and the kernel."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 * 7 // 10
    return 4 * 1024**3


def _release_memory() -> None:
    from serving.loading import release_freed_heap  # imports torch: only ever on the inference thread

    release_freed_heap()


class MultiModelHost:
    """The loaded models of a multi-model endpoint, their memory and their use order."""

    def __init__(
        self,
        state: ServerState,
        root: Path,
        budget: int,
        load: Callable[[ModelRef], LoadedModel],
        measure: Callable[[], int] = resident_bytes,
    ) -> None:
        self.state, self.root, self.budget, self.load_one, self.measure = state, root, budget, load, measure
        self.hosted: OrderedDict[str, Hosted] = OrderedDict()
        """Least recently invoked first."""
        self.loading: dict[str, tuple[str, asyncio.Task]] = {}
        self.reserved = 0
        """Bytes of loads under way, counted before they are measured."""
        self.lock = asyncio.Lock()  # the room check, the evictions and the reservation are one step

    @property
    def used(self) -> int:
        return sum(h.charge for h in self.hosted.values()) + self.reserved

    def touch(self, name: str) -> None:
        if name in self.hosted:
            self.hosted.move_to_end(name)

    def resolve(self, url: str) -> Path:
        """The directory ``url`` names, when it lies inside the multi-model directory; LayoutError otherwise."""
        if not url:
            raise LayoutError(f'give "url": the path of the model SageMaker unpacked, inside {self.root}')
        path = Path(url) if Path(url).is_absolute() else self.root / url
        resolved = inside(self.root, path, "multi-model directory")
        if not resolved.exists():
            raise LayoutError(f"model path {url} does not exist")
        return resolved

    async def _make_room(self, need: int, name: str) -> None:
        """Unload idle models other than ``name``, least recently invoked first, until ``need`` more bytes
        fit; else NoRoom."""
        if need > self.budget:
            raise NoRoom(
                f"model {name!r} needs {need} bytes, more than the whole budget of {self.budget} "
                "(--multi-model-memory-bytes)"
            )
        while self.used + need > self.budget:
            idle = next(
                (h for h in self.hosted.values() if h.name != name and not self._served(h.name).batcher.busy), None
            )
            if idle is None:
                raise NoRoom(
                    f"no room for model {name!r} ({need} bytes): {self.used} of {self.budget} bytes are "
                    "held by models with requests in flight"
                )
            log.info("unloading %s (least recently used) to make room for %s", idle.name, name)
            await self._unload(idle.name)

    def _served(self, name: str):
        return self.state.models[name][VERSION]

    async def _unload(self, name: str) -> None:
        self.hosted.pop(name)
        await retire_model(self.state, name, VERSION, keep_history=False)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.state.executor, _release_memory)

    def _load_measured(self, ref: ModelRef) -> tuple[LoadedModel, int]:
        """On the inference thread: the model, and how much the process grew loading it."""
        before = self.measure()
        loaded = self.load_one(ref)
        _release_memory()
        return loaded, max(0, self.measure() - before)

    async def load(self, name: str, url: str) -> Hosted:
        """Load ``name`` from ``url``; a second call for a name that is loading waits for that same load."""
        if name in self.loading:
            loading_url, task = self.loading[name]
            if loading_url != url:
                raise FileExistsError(f"model {name!r} is being loaded from {loading_url}: unload it first")
            return await asyncio.shield(task)
        if name in self.hosted or name in self.state.models:
            raise FileExistsError(f"model {name!r} is already loaded: unload it first (DELETE /models/{name})")
        task = asyncio.get_running_loop().create_task(self._load(name, url))
        self.loading[name] = (url, task)
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self.loading.pop(name, None)
            else:  # this caller went away; the load goes on and cleans up after itself
                task.add_done_callback(lambda _: self.loading.pop(name, None))

    async def _load(self, name: str, url: str) -> Hosted:
        # Directory walks (the link checks, the sizes): off the event loop every other request waits on.
        path = await asyncio.to_thread(self.resolve, url)
        estimate = await asyncio.to_thread(files_bytes, path)
        async with self.lock:
            await self._make_room(estimate, name)
            self.reserved += estimate
        try:
            loop = asyncio.get_running_loop()
            model, grew = await loop.run_in_executor(
                self.state.executor, self._load_measured, ModelRef(name, VERSION, path)
            )
        finally:
            self.reserved -= estimate
        hosted = Hosted(name, url, max(estimate, grew))
        serve_model(self.state, model)
        self.hosted[name] = hosted
        async with self.lock:
            try:
                await self._make_room(0, name)  # it measured larger than its files: unload others to fit it
            except NoRoom:
                await self._unload(name)
                raise
        log.info(
            "multi-model: loaded %s from %s (%d bytes; %d of %d used)", name, url, hosted.charge, self.used, self.budget
        )
        return hosted

    async def unload(self, name: str) -> None:
        if name in self.loading:
            raise FileExistsError(f"model {name!r} is still loading: retry when POST /models has answered")
        if name not in self.hosted:
            raise LookupError(f"model {name!r} is not loaded")
        await self._unload(name)
        log.info("multi-model: unloaded %s (%d of %d bytes used)", name, self.used, self.budget)


class MultiModelApi:
    """The multi-model container routes over one :class:`MultiModelHost`."""

    def __init__(self, host: MultiModelHost) -> None:
        self.host = host

    @staticmethod
    def describe(hosted: Hosted) -> dict[str, str]:
        return {"modelName": hosted.name, "modelUrl": hosted.url}

    async def load(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise InvalidRegistration('the body must be JSON: {"model_name": ..., "url": ...}') from None
        name, url = (body.get("model_name"), body.get("url")) if isinstance(body, dict) else (None, None)
        if not isinstance(name, str) or not MODEL_NAME.match(name):
            raise InvalidRegistration(f'"model_name" {name!r} must be letters, digits, "_", "." or "-" (at most 256)')
        if not isinstance(url, str):
            raise InvalidRegistration(f'"url" must be the model\'s path inside {self.host.root}')
        hosted = await self._load(name, url)
        return JSONResponse({"status": f"Model {name!r} loaded", **self.describe(hosted)})

    async def _load(self, name: str, url: str) -> Hosted:
        """The host's load, its failures as the contract's answers."""
        try:
            return await self.host.load(name, url)
        except FileExistsError as exc:
            raise Conflict(str(exc)) from None
        except NoRoom as exc:
            raise InsufficientStorage(str(exc)) from None
        except LayoutError as exc:
            raise InvalidRegistration(str(exc)) from None
        except MemoryError:
            raise InsufficientStorage(f"out of memory loading model {name!r}") from None
        except Exception as exc:  # the artifact itself is broken: say so, keep serving the others
            from serving.artifact import ArtifactError

            if not isinstance(exc, ArtifactError):
                log.exception("multi-model: loading %s from %s failed", name, url)
            raise InvalidModel(f"model {name!r} from {url}: {exc}") from None

    async def list_models(self, request: Request) -> Response:
        limit_text = request.query_params.get("limit", str(PAGE))
        start_text = request.query_params.get("next_page_token", "0")
        if not limit_text.isdigit() or not 0 < int(limit_text) <= 1000 or not start_text.isdigit():
            raise InvalidRequest("limit must be 1-1000 and next_page_token one this API returned")
        names = sorted(self.host.hosted)
        start, limit = int(start_text), int(limit_text)
        page: dict[str, object] = {"models": [self.describe(self.host.hosted[n]) for n in names[start : start + limit]]}
        if start + limit < len(names):
            page["nextPageToken"] = str(start + limit)
        return JSONResponse(page)

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        hosted = self.host.hosted.get(name)
        if hosted is None:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return JSONResponse(self.describe(hosted))

    async def unload(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self.host.unload(name)
        except LookupError:
            raise ModelNotFound(f"model {name!r} is not loaded") from None
        except FileExistsError as exc:
            raise Conflict(str(exc)) from None
        return JSONResponse({"status": f"Model {name!r} unloaded"})

    async def run(self, request: Request, name: str) -> Response:
        if name not in self.host.hosted:
            loaded = ", ".join(sorted(self.host.hosted)) or "none"
            raise ModelNotFound(f"model {name!r} is not loaded (loaded: {loaded}): load it with POST /models")
        self.host.touch(name)
        return await infer(self.host.state, request, name, VERSION)

    async def invoke(self, request: Request) -> Response:
        return await self.run(request, request.path_params["name"])

    async def invocations(self, request: Request) -> Response:
        target = request.headers.get(TARGET_MODEL)
        if not target:
            raise InvalidRequest(
                "this is a multi-model endpoint: name the model with TargetModel "
                "(the X-Amzn-SageMaker-Target-Model header)"
            )
        return await self.run(request, target)


def build_multi_model_app(host: MultiModelHost) -> Starlette:
    api = MultiModelApi(host)
    return json_api(
        [
            Route("/models", api.list_models, methods=["GET"]),
            Route("/models", api.load, methods=["POST"]),
            Route("/models/{name}", api.get_model, methods=["GET"]),
            Route("/models/{name}", api.unload, methods=["DELETE"]),
            Route("/models/{name}/invoke", api.invoke, methods=["POST"]),
            Route("/invocations", api.invocations, methods=["POST"]),
        ]
    )


def handles(path: str) -> bool:
    """Whether a path is the multi-model API's (the rest of the inference port's routes stay as they are)."""
    return path == "/invocations" or path == "/models" or path.startswith("/models/")
