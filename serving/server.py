"""Start the server from a :class:`~serving.config.ServerConfig`: plan the models, bind the port, then run
uvicorn while the inference thread loads, verifies and warms up every model.

The socket is bound before torch is imported, so ``/ping`` answers 503 while the models load.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from serving.config import ServerConfig, StartupError

if TYPE_CHECKING:
    from serving.state import LoadedModel, ServerState
    from serving.store import ModelRef

log = logging.getLogger("serving")
STARTED = time.perf_counter()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP, and without it Nagle + delayed ACK add ~40 ms to every keep-alive response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use: stop whatever listens there "
                "(make destroy) or pick another port with SAGEMAKER_BIND_TO_PORT"
            ) from None
        raise StartupError(f"cannot bind {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_one(config: ServerConfig, ref: ModelRef) -> LoadedModel:
    """Load, verify and warm up one model (on the inference thread)."""
    from serving.loading import load_runner
    from serving.state import LoadedModel

    policy = config.policy(ref.name)
    runner = load_runner(ref, device=config.device, batch_size=policy.max_batch_size, trusted=config.trust_model_files)
    runner.warm_up()
    log.info(
        "model %s:%s ready from %s (%s on %s, batch<=%d, delay %g ms)",
        ref.name,
        ref.version,
        ref.path,
        runner.kind,
        runner.device,
        policy.max_batch_size,
        policy.max_batch_delay * 1000,
    )
    return LoadedModel(ref.name, ref.version, runner, policy)


def _loader(config: ServerConfig, refs: list[ModelRef]) -> Callable[[], list[LoadedModel]]:
    """What runs on the inference thread at startup: load, verify and warm up every model."""

    def load() -> list[LoadedModel]:
        import torch

        from serving.images import limit_pixels
        from serving.loading import release_freed_heap

        limit_pixels(config.image_pixels)
        if config.threads:
            torch.set_num_threads(config.threads)
        loaded = [load_one(config, ref) for ref in refs]
        release_freed_heap()
        log.info(
            "ready after %.2f s: %d model version(s), %d torch threads",
            time.perf_counter() - STARTED,
            len(loaded),
            torch.get_num_threads(),
        )
        return loaded

    return load


def serve(config: ServerConfig) -> int:
    """Plan the models (directory listings only), bind, serve until a signal; StartupError when it cannot."""
    from serving.store import LayoutError, plan

    refs: list[ModelRef] = []
    if not config.multi_model:
        try:
            refs = plan(config.model_dir, config.model_store, config.models)
        except LayoutError as exc:
            raise StartupError(str(exc)) from None
    config.check_model_names({r.name for r in refs})
    sockets = [bind(config.host, config.port)]  # the port is ours (or the error is) before anything slow runs
    try:
        if config.management_port is not None:
            sockets.append(bind(config.management_host, config.management_port))
        return _serve_on(sockets, config, refs)
    finally:
        for s in sockets:
            s.close()


def _management(config: ServerConfig, state: ServerState) -> tuple[int, Any] | None:
    """(port, app) of the management API, or None when it is off."""
    if config.management_port is None:
        return None
    from serving.management import build_management_app, ensure_token

    try:
        token = ensure_token(config.management_token_file)
    except (OSError, ValueError) as exc:
        raise StartupError(f"management token: {exc}") from None
    app = build_management_app(state, token, config.model_store, load=lambda ref: load_one(config, ref))
    return config.management_port, app


def _multi_model(config: ServerConfig, state: ServerState) -> tuple[Callable[[str], bool], Any] | None:
    """(paths, app) of the multi-model container API, or None when the server is not in that mode."""
    if not config.multi_model:
        return None
    from serving.multimodel import MultiModelHost, build_multi_model_app, default_budget, handles

    budget = default_budget() if config.multi_model_budget is None else config.multi_model_budget
    host = MultiModelHost(state, config.multi_model_dir, budget, load=lambda ref: load_one(config, ref))
    log.info("multi-model endpoint: models load from %s, up to %d bytes of them", config.multi_model_dir, budget)
    return handles, build_multi_model_app(host)


def _serve_on(sockets: list[socket.socket], config: ServerConfig, refs: list[ModelRef]) -> int:
    import uvicorn

    from serving.accesslog import AccessLog
    from serving.app import build_app
    from serving.limits import BodyBudget, Limits, protocol
    from serving.state import ServerState

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_failure(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True  # no model, never healthy: exit so the platform sees it

    state = ServerState(
        max_body_bytes=config.max_body_bytes, timeout=config.timeout, bodies=BodyBudget(config.pending_body_bytes)
    )
    access_log = AccessLog(sys.stderr) if config.access_log else None
    app = build_app(
        state,
        load=_loader(config, refs),
        on_failure=on_failure,
        access_log=access_log,
        management=_management(config, state),
        multi_model=_multi_model(config, state),
    )
    uvicorn_config = uvicorn.Config(
        app,
        log_level="info",
        access_log=False,  # ours is structured: serving.access
        timeout_graceful_shutdown=25,  # SageMaker sends SIGKILL 30 s after SIGTERM
        server_header=False,
        http=protocol(config.limits or Limits(), on_reject=state.metrics.rejected),  # serving/limits.py
        ws="none",  # no WebSocket routes: no upgrade handling to attack
    )

    def clean_up() -> None:
        if access_log is not None:
            access_log.close()  # the lines of the last half second are still in its buffer
        if "serving.artifact" in sys.modules:  # only then can an archive have been extracted
            sys.modules["serving.artifact"].remove_scratch()  # extracted .mar / model.tar.gz copies

    server = _server(uvicorn_config, clean_up)
    _log_listening(config)
    server.run(sockets=sockets)
    if failure:
        raise StartupError(failure[0])
    if signal.SIGINT in getattr(server, "stopped_by", ()):  # _server's Server records them
        # uvicorn re-raises the SIGINT inside the event loop, where asyncio's runner may take it as a cancel of a
        # task that is finishing anyway and return normally; end by the signal all the same (__main__.main).
        raise KeyboardInterrupt
    return 0


def _log_listening(config: ServerConfig) -> None:
    log.info(
        "listening on http://%s:%s after %.0f ms", config.host, config.port, 1000 * (time.perf_counter() - STARTED)
    )
    if config.management_port is not None:
        log.info(
            "management API on http://%s:%s (bearer token in %s)",
            config.management_host,
            config.management_port,
            config.management_token_file,
        )


def _server(config: Any, clean_up: Callable[[], None]) -> Any:
    """A uvicorn server that runs ``clean_up`` on every way out: after SIGTERM uvicorn re-raises the signal to
    end the process by it, so a ``finally`` around ``run`` never runs (uvicorn/server.py ``capture_signals``)."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: tuple[int, ...] = ()
        """The signals that stopped it, in order (uvicorn's own list is private)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopped_by = (*self.stopped_by, sig)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():  # on leaving, it re-raises the signal that stopped us
                try:
                    yield
                finally:
                    clean_up()

    return Server(config)
