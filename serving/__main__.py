"""Serve model artifacts on SageMaker's hosting contract and TorchServe's inference API.

SageMaker starts the container with the argument ``serve``; this module accepts it::

    python -m serving serve                                   # the model in SM_MODEL_DIR or /opt/ml/model
    SM_MODEL_DIR=.deepcloud/local/jobs/<id>/model python -m serving --port 8081
    python -m serving --model-store models/ --models digits=digits,big=resnet --max-batch-size 16,digits=1
    python -m serving --model-store models/ --max-batch-delay-ms 5 --threads 2
    make deploy                                               # the latest trained artifact, in the background

Every setting is a flag, else an environment variable (SageMaker passes only environment), else a default:

=====================  =================================  ==========================================
flag                   environment                        default
=====================  =================================  ==========================================
--host                 DEEPCLOUD_BIND_HOST                127.0.0.1 (the image sets 0.0.0.0)
--port                 SAGEMAKER_BIND_TO_PORT             8080
--model-dir            SM_MODEL_DIR                       $SAGEMAKER_BASE_DIR/model (/opt/ml/model)
--model-store          DEEPCLOUD_MODEL_STORE              none: serve --model-dir as model "model"
--models               DEEPCLOUD_MODELS                   every artifact in the store
--max-batch-size       DEEPCLOUD_MAX_BATCH_SIZE           32
--max-batch-delay-ms   DEEPCLOUD_MAX_BATCH_DELAY_MS       0 (batch what queued up, wait for nothing)
--max-queue            DEEPCLOUD_MAX_QUEUE                1024 requests per model, then 503
--timeout-s            SAGEMAKER_MODEL_SERVER_TIMEOUT     60 (SageMaker's invocation timeout), then 504
--max-body-bytes       DEEPCLOUD_MAX_BODY_BYTES           6291456 (SageMaker's 6 MB cap), then 413
--threads              DEEPCLOUD_INFERENCE_THREADS        torch's default (one per core)
--device               DEEPCLOUD_DEVICE                   cuda when present, else cpu
--management-port      DEEPCLOUD_MANAGEMENT_PORT          off (serving/management.py)
--management-host      DEEPCLOUD_MANAGEMENT_HOST          127.0.0.1
--management-token-    DEEPCLOUD_MANAGEMENT_TOKEN_FILE    ~/.deepcloud/management-token (made, 0600,
  file                                                    when missing; the token is never logged)
--no-access-log        DEEPCLOUD_ACCESS_LOG=0             a JSON line per request on stderr
--trust-model-files    DEEPCLOUD_TRUST_MODEL_FILES=1      off: a .pt2 the strict reader refuses is not
                                                          served (on: torch.export.load, which may run
                                                          code from the file)
--max-connections      DEEPCLOUD_MAX_CONNECTIONS          512, then the oldest idle one is closed (503)
--max-header-bytes     DEEPCLOUD_MAX_HEADER_BYTES         32768 (request line and headers), then 431
--max-headers          DEEPCLOUD_MAX_HEADERS              100 header lines, then 431
--max-request-line-    DEEPCLOUD_MAX_REQUEST_LINE_BYTES   8192, then 414
  bytes
--header-timeout-s     DEEPCLOUD_HEADER_TIMEOUT_S         10 to send the request line and headers, then 408
--body-timeout-s       DEEPCLOUD_BODY_TIMEOUT_S           30 to send the body, then 408
--max-pending-body-    DEEPCLOUD_MAX_PENDING_BODY_BYTES   134217728: bodies held at once, then 503
  bytes
--max-image-pixels     DEEPCLOUD_MAX_IMAGE_PIXELS         16777216 (4096x4096) per decoded image, then 400
--multi-model          SAGEMAKER_MULTI_MODEL=true         off: SageMaker sets it on a multi-model
                                                          endpoint (serving/multimodel.py)
--multi-model-dir      DEEPCLOUD_MULTI_MODEL_DIR          /opt/ml/models: the only place it loads from
--multi-model-memory-  DEEPCLOUD_MULTI_MODEL_MEMORY_      70 % of the memory available at startup,
  bytes                  BYTES                            then least recently used models unload (507)
=====================  =================================  ==========================================

serving/limits.py says why each limit is there; docs/serving.md ("Threat model") what each one bounds.

``--max-batch-size`` and ``--max-batch-delay-ms`` take one value for every model, or a list that sets
some models apart: ``16,digits=1`` (see serving/store.py for the model store's layout).

The socket is bound first, before torch is imported, so ``/ping`` answers 503 while the models load and
200 once every one is loaded, verified and warmed up. SIGTERM/SIGINT drain in-flight requests (up to
25 s: SageMaker kills 30 s after SIGTERM), then the process ends by that signal (status 143/130 in a
shell; as a container's PID 1, whose own signals with the default action the kernel ignores, it exits 0).
Exit codes otherwise: 1 the port is taken or a model cannot be served (the last line on stderr,
``error: ...``, says which); 2 bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("serving")
STARTED = time.perf_counter()


class StartupError(Exception):
    """The server cannot start; the message is the one line the user sees."""


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve"],
        default="serve",
        help="SageMaker passes 'serve'; it is also the default",
    )
    parser.add_argument(
        "--host", default=_env("DEEPCLOUD_BIND_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)"
    )
    parser.add_argument("--port", default=_env("SAGEMAKER_BIND_TO_PORT", "8080"), help="port to bind (default 8080)")
    default_model = os.environ.get("SM_MODEL_DIR") or str(
        Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "model"
    )
    parser.add_argument(
        "--model-dir",
        default=default_model,
        type=Path,
        help="one artifact directory or model.tar.gz (default $SM_MODEL_DIR or /opt/ml/model)",
    )
    parser.add_argument(
        "--model-store",
        default=_env("DEEPCLOUD_MODEL_STORE", None),
        type=lambda v: Path(v) if v else None,
        help="directory of model artifacts",
    )
    parser.add_argument(
        "--models",
        default=_env("DEEPCLOUD_MODELS", None),
        help="name=path,... inside the model store (default: every artifact in it)",
    )
    parser.add_argument(
        "--max-batch-size",
        default=_env("DEEPCLOUD_MAX_BATCH_SIZE", "32"),
        help="most instances per forward pass: N, or N,name=N,... (default 32)",
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        default=_env("DEEPCLOUD_MAX_BATCH_DELAY_MS", "0"),
        help="ms the oldest request waits for a batch to fill: MS, or MS,name=MS,... (default 0)",
    )
    parser.add_argument(
        "--max-queue",
        default=_env("DEEPCLOUD_MAX_QUEUE", "1024"),
        help="requests waiting per model before 503 (default 1024)",
    )
    parser.add_argument(
        "--timeout-s",
        default=_env("SAGEMAKER_MODEL_SERVER_TIMEOUT", "60"),
        help="seconds a request may take before 504 (default 60)",
    )
    parser.add_argument(
        "--max-body-bytes",
        default=_env("DEEPCLOUD_MAX_BODY_BYTES", str(6 * 1024 * 1024)),
        help="largest request body before 413 (default 6291456, SageMaker's cap)",
    )
    parser.add_argument(
        "--threads",
        default=_env("DEEPCLOUD_INFERENCE_THREADS", None),
        help="torch threads for inference (default: torch's, one per core)",
    )
    parser.add_argument(
        "--device", default=_env("DEEPCLOUD_DEVICE", None), help="cpu, cuda or cuda:N (default: cuda when present)"
    )
    parser.add_argument(
        "--management-port",
        default=_env("DEEPCLOUD_MANAGEMENT_PORT", None),
        help="turn the management API on, on this port (default: off)",
    )
    parser.add_argument(
        "--management-host",
        default=_env("DEEPCLOUD_MANAGEMENT_HOST", "127.0.0.1"),
        help="address the management API binds (default 127.0.0.1)",
    )
    default_token = str(Path.home() / ".deepcloud" / "management-token")
    parser.add_argument(
        "--management-token-file",
        type=Path,
        default=_env("DEEPCLOUD_MANAGEMENT_TOKEN_FILE", default_token),
        help="bearer token for the management API; generated (mode 0600) when the file is missing",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=os.environ.get("DEEPCLOUD_ACCESS_LOG", "1") != "0",
        help="no JSON access-log line per request",
    )
    parser.add_argument(
        "--trust-model-files",
        action="store_true",
        default=os.environ.get("DEEPCLOUD_TRUST_MODEL_FILES", "0") == "1",
        help="serve .pt2 files the strict reader refuses through torch.export.load, which may run "
        "code from them (default: off, they are refused)",
    )
    for flag, env, default, text in LIMIT_FLAGS:
        parser.add_argument(flag, default=_env(env, default), help=text)
    parser.add_argument(
        "--multi-model",
        action="store_true",
        default=os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() in ("true", "1"),
        help="serve SageMaker's multi-model container API: models are loaded and unloaded when "
        "SageMaker asks (default: off; SageMaker sets SAGEMAKER_MULTI_MODEL=true)",
    )
    parser.add_argument(
        "--multi-model-dir",
        type=Path,
        default=_env("DEEPCLOUD_MULTI_MODEL_DIR", "/opt/ml/models"),
        help="the directory SageMaker unpacks models into, the only one loaded from (default /opt/ml/models)",
    )
    parser.add_argument(
        "--multi-model-memory-bytes",
        default=_env("DEEPCLOUD_MULTI_MODEL_MEMORY_BYTES", None),
        help="memory the loaded models may take before the least recently used unload "
        "(default: 70%% of the memory available at startup)",
    )
    return parser.parse_args(argv)


LIMIT_FLAGS = (
    (
        "--max-connections",
        "DEEPCLOUD_MAX_CONNECTIONS",
        "512",
        "open connections at once; past it the oldest idle one is closed (default 512)",
    ),
    (
        "--max-header-bytes",
        "DEEPCLOUD_MAX_HEADER_BYTES",
        "32768",
        "bytes of the request line and headers before 431 (default 32768)",
    ),
    ("--max-headers", "DEEPCLOUD_MAX_HEADERS", "100", "header lines per request before 431 (default 100)"),
    (
        "--max-request-line-bytes",
        "DEEPCLOUD_MAX_REQUEST_LINE_BYTES",
        "8192",
        "bytes of the request target before 414 (default 8192)",
    ),
    (
        "--header-timeout-s",
        "DEEPCLOUD_HEADER_TIMEOUT_S",
        "10",
        "seconds to send the request line and headers before 408 (default 10)",
    ),
    ("--body-timeout-s", "DEEPCLOUD_BODY_TIMEOUT_S", "30", "seconds to send the body before 408 (default 30)"),
    (
        "--max-pending-body-bytes",
        "DEEPCLOUD_MAX_PENDING_BODY_BYTES",
        str(128 * 1024 * 1024),
        "bytes of request bodies held at once before 503 (default 134217728)",
    ),
    (
        "--max-image-pixels",
        "DEEPCLOUD_MAX_IMAGE_PIXELS",
        str(4096 * 4096),
        "pixels of one decoded image before 400 (default 16777216)",
    ),
)


def _number(flag: str, text: str, kind: type, minimum: float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise StartupError(f"{flag} {text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise StartupError(f"{flag} must be at least {int(minimum) if kind is int else f'{minimum:g}'}, got {text}")
    return value


def per_model(flag: str, text: str, kind: type, minimum: float) -> tuple[float, dict[str, float]]:
    """``"16,digits=1"`` -> (16, {"digits": 1}): a default and per-model overrides."""
    default, overrides = None, {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.rpartition("=")
        if sep:
            overrides[name.strip()] = _number(f"{flag} {name.strip()}=", value.strip(), kind, minimum)
        elif default is None:
            default = _number(flag, value, kind, minimum)
        else:
            raise StartupError(f"{flag} {text!r} has two defaults: give one number, then name=number entries")
    if default is None:
        raise StartupError(f"{flag} {text!r} has no default value: start it with a number, e.g. 16,digits=1")
    return default, overrides


def _port(port_text: str) -> int:
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StartupError(f"port {port_text!r} is not a port number: set SAGEMAKER_BIND_TO_PORT to 1-65535")
    return int(port_text)


def bind(host: str, port_text: str) -> socket.socket:
    port = _port(port_text)
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


def _load_one(args: argparse.Namespace, ref, policy):
    """Load, verify and warm up one model (on the inference thread)."""
    from serving.loading import load_runner
    from serving.state import LoadedModel

    runner = load_runner(ref, device=args.device, batch_size=policy.max_batch_size, trusted=args.trust_model_files)
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


def _loader(args: argparse.Namespace, refs, policies):
    """What runs on the inference thread at startup: load, verify and warm up every model."""

    def load():
        import torch

        from serving.images import limit_pixels

        limit_pixels(args.image_pixels)
        if args.threads:
            torch.set_num_threads(int(args.threads))
        from serving.loading import release_freed_heap

        loaded = [_load_one(args, ref, policies(ref.name)) for ref in refs]
        release_freed_heap()
        log.info(
            "ready after %.2f s: %d model version(s), %d torch threads",
            time.perf_counter() - STARTED,
            len(loaded),
            torch.get_num_threads(),
        )
        return loaded

    return load


def serve(args: argparse.Namespace) -> int:
    from serving.store import LayoutError, plan

    # Settings first (cheap, no torch): a typo fails before the port is taken.
    _port(args.port)
    size, sizes = per_model("--max-batch-size", args.max_batch_size, int, 1)
    delay, delays = per_model("--max-batch-delay-ms", args.max_batch_delay_ms, float, 0)
    queue = int(_number("--max-queue", args.max_queue, int, 1))
    timeout = _number("--timeout-s", args.timeout_s, float, 0.001)
    max_body = int(_number("--max-body-bytes", args.max_body_bytes, int, 1))
    args.limits = _limits(args)  # parsed here so a typo fails before the port is taken; used by _serve_on
    args.pending_body_bytes = int(_number("--max-pending-body-bytes", args.max_pending_body_bytes, int, max_body))
    args.image_pixels = int(_number("--max-image-pixels", args.max_image_pixels, int, 1))
    if args.threads is not None:
        _number("--threads", args.threads, int, 1)
    if args.multi_model:
        refs = _multi_model_settings(args)
    else:
        try:
            refs = plan(args.model_dir, args.model_store, args.models)
        except LayoutError as exc:
            raise StartupError(str(exc)) from None
    names = {r.name for r in refs}
    for flag, overrides in (("--max-batch-size", sizes), ("--max-batch-delay-ms", delays)):
        if not args.multi_model and (unknown := sorted(set(overrides) - names)):
            raise StartupError(
                f"{flag} names {', '.join(unknown)}, which is not a loaded model (loaded: {', '.join(sorted(names))})"
            )

    def policies(name: str):
        from serving.batching import BatchPolicy

        return BatchPolicy(
            max_batch_size=int(sizes.get(name, size)), max_batch_delay=delays.get(name, delay) / 1000, max_queue=queue
        )

    management_port = None
    if args.management_port is not None:
        management_port = _port(args.management_port)
        if management_port == _port(args.port):
            raise StartupError(f"--management-port {management_port} is the inference port: pick another one")
    sock = bind(args.host, args.port)  # then the port: ours (or the error is) before anything slow runs
    sockets = [sock]
    try:
        if management_port is not None:
            sockets.append(bind(args.management_host, str(management_port)))
        return _serve_on(sockets, args, refs, policies, timeout, max_body)
    finally:
        for s in sockets:
            s.close()


def _multi_model_settings(args: argparse.Namespace) -> list:
    """No model at startup (SageMaker loads them through the API): check the mode's own settings."""
    if args.models or args.model_store is not None:
        raise StartupError(
            "a multi-model endpoint loads its models when SageMaker asks, from "
            f"{args.multi_model_dir}: drop --models and --model-store"
        )
    if not args.multi_model_dir.is_dir():
        raise StartupError(
            f"multi-model directory {args.multi_model_dir} is not a directory: create it or set --multi-model-dir"
        )
    if args.multi_model_memory_bytes is None:
        from serving.multimodel import default_budget

        args.multi_model_budget = default_budget()
    else:
        args.multi_model_budget = int(_number("--multi-model-memory-bytes", args.multi_model_memory_bytes, int, 1))
    return []


def _limits(args: argparse.Namespace):
    """The connection limits of serving/limits.py, from the flags."""
    from serving.limits import Limits

    ints = {
        name: int(_number(flag, getattr(args, name), int, 1))
        for flag, name in (
            ("--max-connections", "max_connections"),
            ("--max-header-bytes", "max_header_bytes"),
            ("--max-headers", "max_headers"),
            ("--max-request-line-bytes", "max_request_line_bytes"),
        )
    }
    if ints["max_request_line_bytes"] > ints["max_header_bytes"]:
        raise StartupError(
            f"--max-request-line-bytes {ints['max_request_line_bytes']} is larger than "
            f"--max-header-bytes {ints['max_header_bytes']}, which includes the request line"
        )
    return Limits(
        **ints,
        header_timeout=_number("--header-timeout-s", args.header_timeout_s, float, 0.001),
        body_timeout=_number("--body-timeout-s", args.body_timeout_s, float, 0.001),
    )


def _management(args: argparse.Namespace, state, policies):
    """(port, app) of the management API, or None when it is off."""
    if args.management_port is None:
        return None
    from serving.management import build_management_app, ensure_token

    try:
        token = ensure_token(args.management_token_file)
    except (OSError, ValueError) as exc:
        raise StartupError(f"management token: {exc}") from None
    app = build_management_app(
        state, token, args.model_store, load=lambda ref: _load_one(args, ref, policies(ref.name))
    )
    return int(args.management_port), app


def _multi_model(args: argparse.Namespace, state, policies):
    """(paths, app) of the multi-model container API, or None when the server is not in that mode."""
    if not args.multi_model:
        return None
    from serving.multimodel import MultiModelHost, build_multi_model_app, handles

    host = MultiModelHost(
        state, args.multi_model_dir, args.multi_model_budget, load=lambda ref: _load_one(args, ref, policies(ref.name))
    )
    log.info(
        "multi-model endpoint: models load from %s, up to %d bytes of them",
        args.multi_model_dir,
        args.multi_model_budget,
    )
    return handles, build_multi_model_app(host)


def _serve_on(
    sockets: list[socket.socket], args: argparse.Namespace, refs, policies, timeout: float, max_body: int
) -> int:
    import uvicorn

    from serving.app import build_app
    from serving.limits import BodyBudget, protocol
    from serving.state import ServerState

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_failure(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True  # no model, never healthy: exit so the platform sees it

    state = ServerState(max_body_bytes=max_body, timeout=timeout, bodies=BodyBudget(args.pending_body_bytes))
    from serving.accesslog import AccessLog

    access_log = AccessLog(sys.stderr) if args.access_log else None
    app = build_app(
        state,
        load=_loader(args, refs, policies),
        on_failure=on_failure,
        access_log=access_log,
        management=_management(args, state, policies),
        multi_model=_multi_model(args, state, policies),
    )
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=False,  # ours is structured: serving.access
        timeout_graceful_shutdown=25,  # SageMaker sends SIGKILL 30 s after SIGTERM
        server_header=False,
        http=protocol(args.limits, on_reject=state.metrics.rejected),  # serving/limits.py
        ws="none",
    )  # no WebSocket routes: no upgrade handling to attack

    def clean_up() -> None:
        if access_log is not None:
            access_log.close()  # the lines of the last half second are still in its buffer
        if "serving.artifact" in sys.modules:  # only then can an archive have been extracted
            sys.modules["serving.artifact"].remove_scratch()  # extracted .mar / model.tar.gz copies

    server = _server(config, clean_up)
    log.info("listening on http://%s:%s after %.0f ms", args.host, args.port, 1000 * (time.perf_counter() - STARTED))
    if args.management_port is not None:
        log.info(
            "management API on http://%s:%s (bearer token in %s)",
            args.management_host,
            args.management_port,
            args.management_token_file,
        )
    server.run(sockets=sockets)
    if failure:
        raise StartupError(failure[0])
    return 0


def _server(config, clean_up):
    """A uvicorn server that runs ``clean_up`` on every way out: after SIGTERM uvicorn re-raises the signal to
    end the process by it, so a ``finally`` around ``run`` never runs (uvicorn/server.py ``capture_signals``)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():  # on leaving, it re-raises the signal that stopped us
                try:
                    yield
                finally:
                    clean_up()

    return Server(config)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return serve(args)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # uvicorn re-raised the SIGINT that stopped it: end by it, without a traceback
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)
        return 130


if __name__ == "__main__":
    sys.exit(main())
