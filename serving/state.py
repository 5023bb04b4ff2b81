"""What the routes read: the served models by name and version, and the server's request limits.

Models are added and removed on the event loop only (startup, the management API, a multi-model host);
the inference thread runs their forward passes and loads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from serving.batching import Batcher, BatchPolicy
from serving.errors import ModelNotFound
from serving.limits import BodyBudget
from serving.metrics import Metrics
from serving.store import version_key

if TYPE_CHECKING:
    from serving.runner import Runner

MAX_BODY_BYTES = 6 * 1024 * 1024
"""SageMaker's invocation payload cap."""
DEFAULT_PENDING_BODY_BYTES = 128 * 1024 * 1024
"""What --max-pending-body-bytes defaults to: about 21 bodies of the largest size at once."""


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
            self.defaults[name] = max(versions, key=version_key)
        return served

    def find(self, name: str | None, version: str | None = None) -> Served:
        """The model to run (the default model when ``name`` is None); ModelNotFound, a 404, otherwise."""
        name = self.default_model if name is None else name
        versions = self.models.get(name or "")
        if name is None or versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r} is loaded (loaded: {known})")
        version = self.defaults[name] if version is None else version
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r} (loaded: {', '.join(sorted(versions))})")
        return versions[version]

    def versions(self, name: str) -> list[str]:
        """The loaded versions of ``name``, lowest first."""
        return sorted(self.models[name], key=version_key)


def serve_model(state: ServerState, model: LoadedModel, default: bool = True) -> Served:
    """Give a loaded model its batcher and metrics and make it routable (on the event loop)."""
    assert state.executor is not None, "the app's lifespan has not started"
    label = f"{model.name}:{model.version}"
    batcher = Batcher(
        model.runner.forward,
        model.policy,
        state.executor,
        on_batch=state.metrics.batch_observer(label),
        size=model.runner.size,
    )
    served = Served(model.name, model.version, model.runner, batcher)
    batcher.start()
    state.metrics.track_queue(label, lambda b=batcher: b.depth)
    state.add(served, default=default)
    return served


async def retire_model(state: ServerState, name: str, version: str, keep_history: bool = True) -> None:
    """Stop routing to a model version, then stop its batcher (queued requests get 503).
    ``keep_history``: its request counters stay in /metrics (see Metrics.forget)."""
    served = state.remove(name, version)
    await served.batcher.stop()
    state.metrics.forget(served.label, history=keep_history)
