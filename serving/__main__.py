"""Serve a model artifact on SageMaker's hosting contract (GET /ping, POST /invocations).

SageMaker starts the container with the argument ``serve``; this module accepts it::

    python -m serving serve                                   # model from SM_MODEL_DIR or /opt/ml/model
    SM_MODEL_DIR=.deepcloud/local/jobs/<id>/model python -m serving --port 8081
    make deploy                                               # the latest trained artifact, in the background

Settings (flag, then environment, then default): ``--port`` / ``SAGEMAKER_BIND_TO_PORT`` / 8080;
``--host`` / ``DEEPCLOUD_BIND_HOST`` / 127.0.0.1 (the image sets 0.0.0.0, as SageMaker needs);
``--model-dir`` / ``SM_MODEL_DIR`` / ``$SAGEMAKER_BASE_DIR/model`` (a directory or a model.tar.gz).

The socket is bound first, so ``/ping`` answers 503 while the model loads and 200 once it is loaded,
verified and warmed up. SIGTERM/SIGINT drain in-flight requests, then the process ends by that
signal (status 143/130 in a shell). Exit codes otherwise: 1 the port is taken or the artifact cannot
be served (one line on stderr says which); 2 bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import socket
import sys
from pathlib import Path

import anyio
import numpy as np
import uvicorn

from serving.app import ServerState, build_app
from serving.artifact import ArtifactError, load_artifact, resolve_model_dir
from serving.predictor import predict

log = logging.getLogger("serving")


class StartupError(Exception):
    """The server cannot start; the message is the one line the user sees."""


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve",
                        help="SageMaker passes 'serve'; it is also the default")
    parser.add_argument("--host", default=os.environ.get("DEEPCLOUD_BIND_HOST", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", default=os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"),
                        help="port to bind (default 8080)")
    default_model = os.environ.get("SM_MODEL_DIR") or str(
        Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "model")
    parser.add_argument("--model-dir", default=default_model, type=Path,
                        help="artifact directory or model.tar.gz (default $SM_MODEL_DIR or /opt/ml/model)")
    return parser.parse_args(argv)


def bind(host: str, port_text: str) -> socket.socket:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StartupError(f"port {port_text!r} is not a port number: set SAGEMAKER_BIND_TO_PORT to 1-65535")
    port = int(port_text)
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
                "(make destroy) or pick another port with SAGEMAKER_BIND_TO_PORT") from None
        raise StartupError(f"cannot bind {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(args: argparse.Namespace) -> int:
    sock = bind(args.host, args.port)
    state = ServerState()
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def load() -> None:
        artifact = load_artifact(resolve_model_dir(args.model_dir))
        predict(artifact, np.zeros((1, *artifact.input_shape), dtype=np.float32))  # warm-up pass
        state.artifact = artifact

    async def load_in_background() -> None:
        try:
            await anyio.to_thread.run_sync(load)
        except ArtifactError as exc:
            failure.append(str(exc))
        except Exception as exc:
            log.exception("model load failed")
            failure.append(f"model load failed: {type(exc).__name__}: {exc}")
        if failure:
            assert server is not None
            server.should_exit = True  # no model, never healthy: exit so the platform sees it
            return
        log.info("model %s ready (labels=%d, input=%s)", args.model_dir, len(state.artifact.labels),
                 list(state.artifact.input_shape))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(load_in_background)
            yield
            tg.cancel_scope.cancel()

    config = uvicorn.Config(build_app(state, lifespan=lifespan), log_level="info",
                            timeout_graceful_shutdown=25,  # SageMaker sends SIGKILL 30 s after SIGTERM
                            server_header=False)
    server = uvicorn.Server(config)
    log.info("listening on http://%s:%s", args.host, args.port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        raise StartupError(failure[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    try:
        return serve(args)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
