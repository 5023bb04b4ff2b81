"""`make deploy` / `make destroy` on the local target: the serving process in the background.

State lives in ``.deepcloud/local/server/``: ``server.json`` (pid, port, model; written last, so its
presence means "deployed") and ``server.log``. The server runs exactly as the image runs it:
``python -m serving serve`` with ``SM_MODEL_DIR`` and ``SAGEMAKER_BIND_TO_PORT``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from ops.errors import OpsError
from ops.paths import Paths

READY_TIMEOUT_S = 120.0
_T = TypeVar("_T")
STOP_TIMEOUT_S = 30.0  # SageMaker's grace period between SIGTERM and SIGKILL


@dataclass(frozen=True, slots=True)
class Deployment:
    pid: int
    host: str
    port: int
    model_dir: str
    log: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _state_file(paths: Paths) -> Path:
    return paths.server / "server.json"


def read_deployment(paths: Paths) -> Deployment | None:
    return read_state(_state_file(paths), Deployment, paths.local)


def read_state(state_file: Path, kind: type[_T], local: Path) -> _T | None:
    """The deployment recorded in ``state_file``, None when there is none; unreadable: remove ``local`` by hand."""
    try:
        return kind(**json.loads(state_file.read_text()))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as exc:
        raise OpsError(f"{state_file} is unreadable ({exc}): remove {local} by hand") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_server(pid: int) -> bool:
    """Guard against signalling an unrelated process that reused the pid."""
    try:
        return b"serving" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the pid


def ping(host: str, port: int, timeout: float = 2.0) -> int | None:
    """HTTP status of GET /ping, or None when nothing answers (SageMaker allows 2 s)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _last_error(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["empty log"])[-1].removeprefix("error: ")


def _check_port_free(host: str, port: int) -> None:
    """The advice the server's own message cannot give: make deploy sets the server's port from PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is not taken
        try:
            probe.bind((host, port))
        except OSError:
            raise OpsError(
                f"port {port} on {host} is already in use: stop whatever listens there, or pick another "
                f"port with make deploy PORT={port + 1}"
            ) from None


def deploy(paths: Paths, model_dir: Path, repo: Path, host: str = "127.0.0.1", port: int = 8080) -> Deployment:
    """Start the server in the background and return once GET /ping answers 200."""
    if read_deployment(paths) is not None:
        print("replacing the running deployment", flush=True)
        stop(paths)
    _check_port_free(host, port)
    paths.server.mkdir(parents=True, exist_ok=True)
    log = paths.server / "server.log"
    env = {
        **os.environ,
        "SM_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "DEEPCLOUD_BIND_HOST": host,
    }
    with log.open("wb") as fh:
        # A new session, so Ctrl-C in the terminal that ran `make deploy` does not reach the server.
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve"],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deployment = Deployment(pid=proc.pid, host=host, port=port, model_dir=str(model_dir), log=str(log))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            reason = _last_error(log)
            _forget_server(paths)
            raise OpsError(f"server exited with code {proc.returncode}: {reason}")
        if ping(host, port, timeout=1.0) == 200:
            tmp = _state_file(paths).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(deployment), indent=2) + "\n")
            os.replace(tmp, _state_file(paths))
            return deployment
        time.sleep(0.1)
    _terminate(proc.pid)
    _forget_server(paths)
    raise OpsError(f"server did not answer /ping with 200 within {READY_TIMEOUT_S:.0f}s; see {log}")


def _forget_server(paths: Paths) -> None:
    """After a failed deploy: no server state, and no empty local/ that `destroy` would report."""
    shutil.rmtree(paths.server, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.local.rmdir()  # only when empty: a trained job keeps it


def _terminate(pid: int) -> bool:
    """SIGTERM, wait for a graceful exit, SIGKILL after the grace period. True if it was running."""
    if not _alive(pid) or not _is_our_server(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def stop(paths: Paths) -> Deployment | None:
    deployment = read_deployment(paths)
    if deployment is not None:
        _terminate(deployment.pid)
        _state_file(paths).unlink(missing_ok=True)
    return deployment


def destroy(paths: Paths) -> list[str]:
    """Stop the server and remove everything the local target created. Idempotent."""
    done = []
    deployment = stop(paths)
    if deployment is not None:
        done.append(f"stopped server pid {deployment.pid} on {deployment.url}")
    if paths.local.exists():
        shutil.rmtree(paths.local)
        done.append(f"removed {paths.local}")
    return done
