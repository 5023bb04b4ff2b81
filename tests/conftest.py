"""Shared fixtures: the real digits dataset, a real trained artifact, and real server processes.

Tests may import every room; the rooms themselves never import each other.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    """Begin installing the OIP clients' and the MLflow server's venvs now, in the background, when a collected
    test will need them."""
    needs = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "clients_python" in needs:
        from tests.serving import oip_venv

        oip_venv.start()
    if "mlflow_server" in needs:
        from tests.trainer import mlflow_server

        mlflow_server.VENV.start()


REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHANNELS = ("train", "validation", "test")


def source_files(*folders: str, pattern: str = "*.py") -> list[Path]:
    """The repository's own files under ``folders``: not caches, nor what runs leave in hidden folders (a Docker
    engine's data root holds whole images' site-packages)."""
    return sorted(
        path
        for folder in folders
        for path in (REPO / folder).rglob(pattern)
        if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port``: bindable the way the server binds (SO_REUSEADDR, so TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def processes_mentioning(text: str) -> list[int]:
    """Live pids whose command line or environment mentions ``text`` (how a test proves nothing is left)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text.encode() in blob and state != "Z":
            found.append(int(proc.name))
    return found


def run_on_terminal(
    command: list[str], env: dict[str, str], columns: int = 100, timeout: float = 120
) -> tuple[int, bytes, str]:
    """Run ``command`` with stderr on a pseudo-terminal (stdout piped): (exit code, screen bytes, stdout)."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))  # a fresh pty is 0x0
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=terminal, env={**os.environ, **env})
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=timeout), screen, stdout


def make_job(base: Path, dataset: Path, hyperparameters: dict[str, str], channels: tuple[str, ...] = CHANNELS) -> Path:
    """A SageMaker training layout under ``base`` with copies of the given channels."""
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for channel in channels:
        shutil.copytree(dataset / channel, base / "input" / "data" / channel)
    return base


def run_trainer(
    base: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ("train",), timeout: float = 300
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "trainer", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_trainer_at_step(
    base: Path, step: int, env: dict[str, str] | None = None, timeout: float = 100
) -> subprocess.CompletedProcess:
    """Run the trainer until its log says ``step=<step>``, then SIGTERM it, as SageMaker's StopTrainingJob does;
    the stdout it returns is what came after that line."""
    command = [PYTHON, "-m", "trainer", "train"]
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), **(env or {})},
    )
    for line in proc.stdout:
        if line.startswith(f"step={step} "):
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo dataset, written by the same code as `make data`."""
    from ops.data import prepare_digits

    dest = tmp_path_factory.mktemp("data") / "digits"
    prepare_digits(dest)
    return dest


MOTO_START_TIMEOUT = 30.0
"""Seconds to wait for moto_server to answer; it takes about one here."""


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a `moto_server` process (pip moto[server]) on a free loopback port, stopped at teardown.

    One per session, shared by tests/trainer (S3) and tests/ops (every service ops calls): tests name what they
    create uniquely instead of resetting it.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with log.open("wb") as fh:
        # `python -m moto.server` is the `moto_server` console script, run by this interpreter: the venv's
        # moto, whatever else is on PATH.
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_answering(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + MOTO_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    raise AssertionError(f"moto_server not answering within {MOTO_START_TIMEOUT}s:\n{log.read_text(errors='replace')}")


TRAINED_EPOCHS = "12"


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """One real training job, run as the container runs it; shared by the tests that need its output."""
    base = make_job(tmp_path_factory.mktemp("job"), dataset, {"epochs": TRAINED_EPOCHS, "seed": "0"})
    result = run_trainer(base)
    assert result.returncode == 0, f"training failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return base


@pytest.fixture
def trained_model(trained_job: Path, tmp_path: Path) -> Path:
    """A private copy of the trained artifact, safe to corrupt."""
    return Path(shutil.copytree(trained_job / "model", tmp_path / "model"))


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one request to 127.0.0.1:``port`` on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Server:
    """A real `python -m serving` process on a free loopback port."""

    def __init__(
        self, model: Path, port: int | None = None, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        """``model`` is SM_MODEL_DIR (or the model store, when ``args`` has --model-store); ``args`` more flags."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = model.parent / f"server-{self.port}.log"
        full_env = {**os.environ, "SM_MODEL_DIR": str(model), "SAGEMAKER_BIND_TO_PORT": str(self.port), **(env or {})}
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "serving", "serve", *args], cwd=REPO, env=full_env, stdout=fh, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, method, path, body, headers)

    def invoke(self, payload: object) -> tuple[int, dict]:
        status, _, body = self.request(
            "POST", "/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        return status, json.loads(body)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.request("GET", "/ping")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_server() -> Iterator:
    """Factory for real server processes; every one is stopped when the test ends, pass or fail."""
    servers: list[Server] = []

    def start(model: Path, **kwargs) -> Server:
        server = Server(model, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
