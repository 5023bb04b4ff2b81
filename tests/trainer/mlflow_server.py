"""A real MLflow tracking server for the trainer's tests: ``mlflow server`` from .venv-mlflow
(requirements/mlflow-server.txt) on a free 127.0.0.1 port, a sqlite backend store and a local artifact folder,
always stopped, with everything it started, when the test is done."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO, free_port
from tests.pinned_venv import PinnedVenv

VENV = PinnedVenv(REPO / ".venv-mlflow", REPO / "requirements" / "mlflow-server.txt", "MLflow server")
START_TIMEOUT = 180.0
"""Seconds for the server to answer /health: about 10 on an idle machine, several times that on a busy one
(it creates its sqlite tables first)."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running(root: Path) -> Iterator[str]:
    """The URL of a fresh server whose store and artifacts live under ``root``."""
    VENV.python()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [
        str(VENV.path / "bin" / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    with log.open("wb") as fh:
        # Its own session: the server starts worker processes of its own, and killpg stops them all.
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"mlflow server not healthy in {START_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:  # a few seconds to stop cleanly; the store is thrown away, so no longer
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
