"""The server's settings: each a flag, else an environment variable, else a default (serving/__main__.py
has the table), read and checked once into a :class:`ServerConfig`.

Nothing here imports torch or binds anything, so a typo fails in milliseconds, before the port is taken.
An error names the flag when the value came from the command line, the environment variable when it came
from there, and says what would be accepted.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.batching import BatchPolicy
    from serving.limits import Limits


class StartupError(Exception):
    """The server cannot start; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class Setting:
    flag: str
    env: str | None
    default: str | None
    help: str
    switch: tuple[str, ...] | None = None
    """For a flag that takes no value: the environment values (lower-cased) that act as the flag does."""


SETTINGS = (
    Setting("--host", "DEEPCLOUD_BIND_HOST", "127.0.0.1", "address to bind (default 127.0.0.1)"),
    Setting("--port", "SAGEMAKER_BIND_TO_PORT", "8080", "port to bind (default 8080)"),
    Setting("--model-dir", "SM_MODEL_DIR", None, "one artifact directory or model.tar.gz (default /opt/ml/model)"),
    Setting("--model-store", "DEEPCLOUD_MODEL_STORE", None, "directory of model artifacts"),
    Setting("--models", "DEEPCLOUD_MODELS", None, "name=path,... inside the model store (default: all of it)"),
    Setting(
        "--max-batch-size", "DEEPCLOUD_MAX_BATCH_SIZE", "32", "most instances per pass: N, or N,name=N,... (default 32)"
    ),
    Setting(
        "--max-batch-delay-ms",
        "DEEPCLOUD_MAX_BATCH_DELAY_MS",
        "0",
        "ms the oldest request waits for a batch to fill: MS, or MS,name=MS,... (default 0)",
    ),
    Setting("--max-queue", "DEEPCLOUD_MAX_QUEUE", "1024", "requests waiting per model before 503 (default 1024)"),
    Setting(
        "--timeout-s", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "60", "seconds a request may take before 504 (default 60)"
    ),
    Setting(
        "--max-body-bytes",
        "DEEPCLOUD_MAX_BODY_BYTES",
        str(6 * 1024 * 1024),
        "largest request body before 413 (default 6291456, SageMaker's cap)",
    ),
    Setting("--threads", "DEEPCLOUD_INFERENCE_THREADS", None, "torch threads for inference (default: one per core)"),
    Setting("--device", "DEEPCLOUD_DEVICE", None, "cpu, cuda or cuda:N (default: cuda when present)"),
    Setting("--management-port", "DEEPCLOUD_MANAGEMENT_PORT", None, "turn the management API on, on this port"),
    Setting("--management-host", "DEEPCLOUD_MANAGEMENT_HOST", "127.0.0.1", "address the management API binds"),
    Setting(
        "--management-token-file",
        "DEEPCLOUD_MANAGEMENT_TOKEN_FILE",
        None,
        "bearer token for the management API; generated (mode 0600) when the file is missing "
        "(default ~/.deepcloud/management-token)",
    ),
    Setting("--no-access-log", "DEEPCLOUD_ACCESS_LOG", None, "no JSON access-log line per request", switch=("0",)),
    Setting(
        "--trust-model-files",
        "DEEPCLOUD_TRUST_MODEL_FILES",
        None,
        "serve .pt2 files the strict reader refuses through torch.export.load, which may run code from them "
        "(default: off, they are refused)",
        switch=("1",),
    ),
    Setting(
        "--max-connections",
        "DEEPCLOUD_MAX_CONNECTIONS",
        "512",
        "open connections at once; past it the oldest idle one is closed (default 512)",
    ),
    Setting(
        "--max-header-bytes",
        "DEEPCLOUD_MAX_HEADER_BYTES",
        "32768",
        "bytes of the request line and headers before 431 (default 32768)",
    ),
    Setting("--max-headers", "DEEPCLOUD_MAX_HEADERS", "100", "header lines per request before 431 (default 100)"),
    Setting(
        "--max-request-line-bytes",
        "DEEPCLOUD_MAX_REQUEST_LINE_BYTES",
        "8192",
        "bytes of the request target before 414 (default 8192)",
    ),
    Setting(
        "--header-timeout-s",
        "DEEPCLOUD_HEADER_TIMEOUT_S",
        "10",
        "seconds to send the request line and headers before 408 (default 10)",
    ),
    Setting("--body-timeout-s", "DEEPCLOUD_BODY_TIMEOUT_S", "30", "seconds to send the body before 408 (default 30)"),
    Setting(
        "--max-pending-body-bytes",
        "DEEPCLOUD_MAX_PENDING_BODY_BYTES",
        str(128 * 1024 * 1024),
        "bytes of request bodies held at once before 503 (default 134217728)",
    ),
    Setting(
        "--max-image-pixels",
        "DEEPCLOUD_MAX_IMAGE_PIXELS",
        str(4096 * 4096),
        "pixels of one decoded image before 400 (default 16777216)",
    ),
    Setting(
        "--multi-model",
        "SAGEMAKER_MULTI_MODEL",
        None,
        "serve SageMaker's multi-model container API: models are loaded and unloaded when SageMaker asks "
        "(default: off; SageMaker sets SAGEMAKER_MULTI_MODEL=true)",
        switch=("true", "1"),
    ),
    Setting(
        "--multi-model-dir",
        "DEEPCLOUD_MULTI_MODEL_DIR",
        "/opt/ml/models",
        "the directory SageMaker unpacks models into, the only one loaded from (default /opt/ml/models)",
    ),
    Setting(
        "--multi-model-memory-bytes",
        "DEEPCLOUD_MULTI_MODEL_MEMORY_BYTES",
        None,
        "memory the loaded models may take before the least recently used unload "
        "(default: 70%% of the memory available at startup)",
    ),
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every setting of one server, checked: what the rest of the server reads."""

    host: str = "127.0.0.1"
    port: int = 8080
    model_dir: Path = Path("/opt/ml/model")
    model_store: Path | None = None
    models: str | None = None
    max_batch_size: int = 32
    batch_size_overrides: Mapping[str, int] = field(default_factory=dict)
    max_batch_delay_ms: float = 0.0
    batch_delay_overrides: Mapping[str, float] = field(default_factory=dict)
    max_queue: int = 1024
    timeout: float = 60.0
    max_body_bytes: int = 6 * 1024 * 1024
    threads: int | None = None
    device: str | None = None
    management_port: int | None = None
    management_host: str = "127.0.0.1"
    management_token_file: Path = field(default_factory=lambda: default_token_file())
    access_log: bool = True
    trust_model_files: bool = False
    limits: Limits | None = None
    """The connection limits of serving/limits.py (None: its defaults)."""
    pending_body_bytes: int = 128 * 1024 * 1024
    image_pixels: int = 4096 * 4096
    multi_model: bool = False
    multi_model_dir: Path = Path("/opt/ml/models")
    multi_model_budget: int | None = None
    """Bytes of loaded models on a multi-model endpoint (None: 70 % of the memory available at startup)."""

    def policy(self, name: str) -> BatchPolicy:
        """The batching policy of model ``name``: its overrides, else the defaults."""
        from serving.batching import BatchPolicy

        return BatchPolicy(
            max_batch_size=self.batch_size_overrides.get(name, self.max_batch_size),
            max_batch_delay=self.batch_delay_overrides.get(name, self.max_batch_delay_ms) / 1000,
            max_queue=self.max_queue,
        )

    def check_model_names(self, names: set[str]) -> None:
        """Per-model overrides must name loaded models (a typo would silently do nothing)."""
        for flag, overrides in (
            ("--max-batch-size", self.batch_size_overrides),
            ("--max-batch-delay-ms", self.batch_delay_overrides),
        ):
            if not self.multi_model and (unknown := sorted(set(overrides) - names)):
                raise StartupError(
                    f"{flag} names {', '.join(unknown)}, which is not a loaded model "
                    f"(loaded: {', '.join(sorted(names))})"
                )


def default_token_file() -> Path:
    return Path.home() / ".deepcloud" / "management-token"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description="Serve model artifacts.")
    parser.add_argument(
        "command", nargs="?", choices=["serve"], default="serve", help="SageMaker passes 'serve'; also the default"
    )
    for setting in SETTINGS:
        dest = setting.flag.removeprefix("--").replace("-", "_")
        if setting.switch is not None:
            parser.add_argument(setting.flag, dest=dest, action="store_const", const=True, help=setting.help)
        else:
            parser.add_argument(setting.flag, dest=dest, help=setting.help)
    return parser


class _Sources:
    """Each setting's text and where it came from: the flag, the environment variable, or the default."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args, self.environ = args, environ
        self.by_flag = {s.flag: s for s in SETTINGS}

    def text(self, flag: str) -> tuple[str | None, str]:
        """(the value's text or None, the name to put in an error about it)."""
        setting = self.by_flag[flag]
        given = getattr(self.args, flag.removeprefix("--").replace("-", "_"))
        if given is not None:
            return given, flag
        if setting.env and self.environ.get(setting.env):
            return self.environ[setting.env], setting.env
        return setting.default, flag

    def switch(self, flag: str) -> bool:
        setting = self.by_flag[flag]
        if getattr(self.args, flag.removeprefix("--").replace("-", "_")):
            return True
        return self.environ.get(setting.env or "", "").lower() in (setting.switch or ())

    def number(self, flag: str, kind: type, minimum: float) -> float:
        text, name = self.text(flag)
        return number(name, text or "", kind, minimum)


def number(name: str, text: str, kind: type, minimum: float) -> float:
    """``text`` as an int or float of at least ``minimum``; StartupError naming ``name`` otherwise."""
    try:
        value = kind(text)
    except ValueError:
        raise StartupError(f"{name} {text!r} is not a {'whole ' if kind is int else ''}number") from None
    if value < minimum:
        raise StartupError(f"{name} must be at least {int(minimum) if kind is int else f'{minimum:g}'}, got {text}")
    return value


def per_model(flag: str, text: str, kind: type, minimum: float) -> tuple[float, dict[str, float]]:
    """``"16,digits=1"`` -> (16, {"digits": 1}): a default and per-model overrides."""
    default, overrides = None, {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.rpartition("=")
        if sep:
            overrides[name.strip()] = number(f"{flag} {name.strip()}=", value.strip(), kind, minimum)
        elif default is None:
            default = number(flag, value, kind, minimum)
        else:
            raise StartupError(f"{flag} {text!r} has two defaults: give one number, then name=number entries")
    if default is None:
        raise StartupError(f"{flag} {text!r} has no default value: start it with a number, e.g. 16,digits=1")
    return default, overrides


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StartupError(f"port {text!r} is not a port number: set SAGEMAKER_BIND_TO_PORT to 1-65535")
    return int(text)


def parse(argv: list[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The settings of ``argv`` and ``environ`` (default: this process's), checked; exits 2 on a bad command
    line (argparse), StartupError on a bad value."""
    environ = os.environ if environ is None else environ
    sources = _Sources(_parser().parse_args(argv), environ)
    port = port_number(sources.text("--port")[0] or "")
    batching = _batching(sources)
    max_body = int(sources.number("--max-body-bytes", int, 1))
    limits = _limits(sources)
    pending = int(sources.number("--max-pending-body-bytes", int, max_body))
    image_pixels = int(sources.number("--max-image-pixels", int, 1))
    threads = None if sources.text("--threads")[0] is None else int(sources.number("--threads", int, 1))
    return ServerConfig(
        host=sources.text("--host")[0] or "127.0.0.1",
        port=port,
        **_models(sources, environ),
        **batching,
        max_body_bytes=max_body,
        threads=threads,
        device=sources.text("--device")[0],
        **_management(sources, port),
        access_log=not sources.switch("--no-access-log"),
        trust_model_files=sources.switch("--trust-model-files"),
        limits=limits,
        pending_body_bytes=pending,
        image_pixels=image_pixels,
        **_multi_model(sources),
    )


def _models(sources: _Sources, environ: Mapping[str, str]) -> dict:
    model_dir = sources.text("--model-dir")[0] or str(Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "model")
    store = sources.text("--model-store")[0]
    return {
        "model_dir": Path(model_dir),
        "model_store": Path(store) if store else None,
        "models": sources.text("--models")[0],
    }


def _batching(sources: _Sources) -> dict:
    sizes, delays = (sources.text(flag)[0] or "" for flag in ("--max-batch-size", "--max-batch-delay-ms"))
    size, size_overrides = per_model("--max-batch-size", sizes, int, 1)
    delay, delay_overrides = per_model("--max-batch-delay-ms", delays, float, 0)
    return {
        "max_batch_size": int(size),
        "batch_size_overrides": {name: int(n) for name, n in size_overrides.items()},
        "max_batch_delay_ms": delay,
        "batch_delay_overrides": delay_overrides,
        "max_queue": int(sources.number("--max-queue", int, 1)),
        "timeout": sources.number("--timeout-s", float, 0.001),
    }


def _limits(sources: _Sources) -> Limits:
    """The connection limits of serving/limits.py."""
    from serving.limits import Limits

    ints = {
        flag.removeprefix("--").replace("-", "_"): int(sources.number(flag, int, 1))
        for flag in ("--max-connections", "--max-header-bytes", "--max-headers", "--max-request-line-bytes")
    }
    if ints["max_request_line_bytes"] > ints["max_header_bytes"]:
        raise StartupError(
            f"--max-request-line-bytes {ints['max_request_line_bytes']} is larger than "
            f"--max-header-bytes {ints['max_header_bytes']}, which includes the request line"
        )
    return Limits(
        **ints,
        header_timeout=sources.number("--header-timeout-s", float, 0.001),
        body_timeout=sources.number("--body-timeout-s", float, 0.001),
    )


def _management(sources: _Sources, port: int) -> dict:
    text = sources.text("--management-port")[0]
    management_port = None if text is None else port_number(text)
    if management_port == port:
        raise StartupError(f"--management-port {management_port} is the inference port: pick another one")
    token_file = sources.text("--management-token-file")[0]
    return {
        "management_port": management_port,
        "management_host": sources.text("--management-host")[0] or "127.0.0.1",
        "management_token_file": Path(token_file) if token_file else default_token_file(),
    }


def _multi_model(sources: _Sources) -> dict:
    """A multi-model endpoint has no model at startup (SageMaker loads them through the API)."""
    on = sources.switch("--multi-model")
    root = Path(sources.text("--multi-model-dir")[0] or "/opt/ml/models")
    if not on:
        return {"multi_model": False, "multi_model_dir": root}
    if sources.text("--models")[0] or sources.text("--model-store")[0]:
        raise StartupError(
            f"a multi-model endpoint loads its models when SageMaker asks, from {root}: drop --models and --model-store"
        )
    if not root.is_dir():
        raise StartupError(f"multi-model directory {root} is not a directory: create it or set --multi-model-dir")
    budget = None
    if sources.text("--multi-model-memory-bytes")[0] is not None:
        budget = int(sources.number("--multi-model-memory-bytes", int, 1))
    return {"multi_model": True, "multi_model_dir": root, "multi_model_budget": budget}
