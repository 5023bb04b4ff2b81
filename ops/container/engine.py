"""The Docker engine behind `make images`, TARGET=container and the container tests.

With ``DOCKER_HOST`` set, that engine is used as it is and never started or stopped here. Otherwise ops runs a
``dockerd`` of its own, so that nothing depends on how (or whether) the machine's Docker service is set up:

    dockerd --bridge=none --iptables=false --ip-masq=false --data-root <engine dir>/data
            --exec-root /run/deepcloud-engine-<hash> -H unix:///run/deepcloud-engine-<hash>/docker.sock

No bridge and no iptables rules, so the engine creates no network of its own and touches no firewall: every
container runs with ``--network=host`` and the servers in it bind 127.0.0.1, which keeps all traffic on loopback.
The data root (images, build cache, volumes) lives in the engine dir, ``.engine/`` in the repository unless
``DEEPCLOUD_ENGINE_DIR`` says otherwise, and survives between runs; the short-lived sockets and pid file live
under /run, where unix socket paths stay short. Starting it needs root, as dockerd does.

Whoever starts the engine records itself as its owner (``engine.json``), and only the owner stops it, by the pid it
recorded: `make images` stops it at the end, a `make deploy TARGET=container` leaves it running for the server
until `make destroy`, and the test session stops what it started.

The docker CLI must build with BuildKit (the Dockerfiles use ``RUN --mount``): Debian's docker.io 20.10 does so
with ``DOCKER_BUILDKIT=1``, a Docker 23+ CLI only with the buildx plugin. ``DEEPCLOUD_DOCKER`` names the CLI;
else the first one on PATH (then /usr/bin/docker) that can.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ops.errors import OpsError

REPO = Path(__file__).resolve().parents[2]  # ops/container/engine.py -> the repository
START_TIMEOUT_S = 60.0
"""How long ops waits for a dockerd it started to answer: a cold data root on a slow disk is the slow case (the usual
start: README, 'The images')."""
STOP_TIMEOUT_S = 45.0
"""dockerd gives running containers 15 s (its shutdown-timeout) and then stops its containerd."""
INSTALL_HINT = "install Debian's docker.io (`apt-get install docker.io`, as .ci/run does with scripts/install-engine)"


@dataclass(frozen=True, slots=True)
class Engine:
    """A Docker engine that answers, and the CLI to talk to it."""

    docker: str
    """Path of a docker CLI that builds with BuildKit."""

    host: str
    """The DOCKER_HOST the CLI is pointed at."""

    version: str
    """The engine's version (`docker info`)."""

    own: bool
    """Whether it is ops' own dockerd (False: DOCKER_HOST's, never started or stopped here)."""

    @property
    def env(self) -> dict[str, str]:
        """What a docker CLI process needs on top of the environment."""
        return {"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def argv(self, *args: str) -> list[str]:
        return [self.docker, *args]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """`docker ARGS`, output captured; an OpsError with docker's own error line when it fails and ``check``."""
        try:
            done = subprocess.run(
                self.argv(*args),
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OpsError(f"`docker {' '.join(args[:2])}` did not finish within {timeout:.0f} s") from None
        if check and done.returncode != 0:
            raise OpsError(f"`docker {' '.join(args[:2])}` failed: {last_line(done.stderr + done.stdout)}")
        return done

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0


def last_line(text: str) -> str:
    """The line that says what went wrong: the last one starting with `error`, else the last non-empty one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "docker: error"))]
    return (errors or lines or ["no output"])[-1]


def engine_dir() -> Path:
    return Path(os.environ.get("DEEPCLOUD_ENGINE_DIR") or REPO / ".engine").absolute()


def _run_dir(data: Path) -> Path:
    """Where the sockets go: /run/deepcloud-engine-<hash of the engine dir>, short enough for containerd's."""
    return Path("/run") / f"deepcloud-engine-{hashlib.sha256(str(data).encode()).hexdigest()[:10]}"


def _state_path(folder: Path) -> Path:
    return folder / "engine.json"


def _client_version(docker: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run(
            [docker, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    digits = []
    for part in done.stdout.strip().split(".")[:2]:
        number = "".join(ch for ch in part if ch.isdigit())
        if not number:
            return None
        digits.append(int(number))
    return tuple(digits) if len(digits) == 2 else None


def _has_buildx(docker: str) -> bool:
    try:
        return (
            subprocess.run([docker, "buildx", "version"], capture_output=True, timeout=30, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_docker_cli() -> str:
    """A docker CLI that builds with BuildKit: DEEPCLOUD_DOCKER, else the first capable one on PATH or in /usr/bin."""
    if chosen := os.environ.get("DEEPCLOUD_DOCKER"):
        if shutil.which(chosen) is None:
            raise OpsError(f"DEEPCLOUD_DOCKER={chosen} is not an executable docker CLI")
        return shutil.which(chosen) or chosen
    candidates: list[str] = []
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        path = Path(folder or ".") / "docker"
        if path.is_file() and os.access(path, os.X_OK) and str(path.resolve()) not in candidates:
            candidates.append(str(path.resolve()))
    if not candidates:
        raise OpsError(f"no docker CLI found: {INSTALL_HINT}")
    for docker in candidates:
        version = _client_version(docker)
        # Before 23, BuildKit is built into `docker build` (DOCKER_BUILDKIT=1); from 23 on it is the buildx plugin.
        if version is not None and (version < (23, 0) or _has_buildx(docker)):
            return docker
    raise OpsError(
        f"none of the docker CLIs found ({', '.join(candidates)}) can build with BuildKit (a Docker 23+ "
        f"CLI needs the buildx plugin): {INSTALL_HINT}, or set DEEPCLOUD_DOCKER"
    )


def _answers(docker: str, host: str, timeout: float = 10) -> str | None:
    """The engine's version when one answers at ``host``, else None."""
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "DOCKER_HOST": host},
        )
    except subprocess.TimeoutExpired:
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version and "error" not in version.lower() else None


def _pid_is_our_dockerd(pid: int, data_root: Path) -> bool:
    """Guard against signalling an unrelated process that reused the pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"dockerd") and str(data_root).encode() in cmdline


def _read_state(folder: Path) -> dict | None:
    try:
        state = json.loads(_state_path(folder).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One process at a time starts or stops the engine of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "engine.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def running(folder: Path | None = None) -> tuple[Engine, dict] | None:
    """Ops' own engine of ``folder`` when it runs and answers, with its state (pid, owner)."""
    folder = folder or engine_dir()
    state = _read_state(folder)
    if state is None or not _pid_is_our_dockerd(state["pid"], folder / "data"):
        return None
    docker = find_docker_cli()
    version = _answers(docker, state["host"])
    return (Engine(docker, state["host"], version, own=True), state) if version else None


def ensure(owner: str, folder: Path | None = None) -> tuple[Engine, bool]:
    """An engine that answers, and whether this call started it (then ``owner`` is recorded as its owner).

    DOCKER_HOST's engine when that is set; else ops' own, started when it is not running."""
    docker = find_docker_cli()
    if external := os.environ.get("DOCKER_HOST"):
        version = _answers(docker, external, timeout=60)
        if version is None:
            raise OpsError(
                f"no Docker engine answers at DOCKER_HOST={external}: start it, or unset DOCKER_HOST to let "
                "ops run its own"
            )
        return Engine(docker, external, version, own=False), False
    folder = folder or engine_dir()
    with _locked(folder):
        found = running(folder)
        if found is not None:
            return found[0], False
        return _start(docker, folder, owner), True


def _start(docker: str, folder: Path, owner: str) -> Engine:
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").is_file() else None)
    if dockerd is None:
        raise OpsError(f"dockerd is not installed: {INSTALL_HINT}; or set DOCKER_HOST to a running engine")
    if os.geteuid() != 0:
        raise OpsError(
            "starting ops' own Docker engine needs root (dockerd does): run as root, or set DOCKER_HOST "
            "to an engine you may use (e.g. unix:///var/run/docker.sock)"
        )
    data = folder / "data"
    run_dir = _run_dir(data)
    for path in (data, run_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    socket_path = run_dir / "docker.sock"
    host = f"unix://{socket_path}"
    config = folder / "daemon.json"
    config.write_text("{}\n")  # not /etc/docker/daemon.json: the machine's settings must not change ours
    log = folder / "dockerd.log"
    argv = [
        dockerd,
        "--config-file",
        str(config),
        "--data-root",
        str(data),
        "--exec-root",
        str(run_dir / "exec"),
        "--pidfile",
        str(run_dir / "dockerd.pid"),
        "--host",
        host,
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
        "--log-level=warn",
    ]
    with log.open("ab") as fh:
        # A session of its own, so a Ctrl-C in the terminal that ran make does not reach the engine.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OpsError(
                f"dockerd exited with code {proc.returncode}: {last_line(log.read_text(errors='replace'))} (log: {log})"
            )
        if socket_path.exists() and (version := _answers(docker, host, timeout=5)):
            state = {"pid": proc.pid, "host": host, "owner": owner, "started": time.time()}
            tmp = _state_path(folder).with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n")
            os.replace(tmp, _state_path(folder))
            return Engine(docker, host, version, own=True)
        time.sleep(0.2)
    _terminate(proc.pid, data)
    raise OpsError(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; see {log}")


def _gone(pid: int, data_root: Path) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it when it is this process's child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    return not _pid_is_our_dockerd(pid, data_root)


def _terminate(pid: int, data_root: Path) -> None:
    """SIGTERM to dockerd (it stops its containers and its containerd), SIGKILL when it is still there later."""
    if not _pid_is_our_dockerd(pid, data_root):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _gone(pid, data_root):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    while not _gone(pid, data_root):
        time.sleep(0.1)


def stop(owner: str | None = None, folder: Path | None = None) -> bool:
    """Stop ops' own engine, by its recorded pid, when it runs and (given ``owner``) that owner started it.

    True when it was stopped."""
    folder = folder or engine_dir()
    with _locked(folder):
        state = _read_state(folder)
        if state is None or (owner is not None and state.get("owner") != owner):
            return False
        _terminate(state["pid"], folder / "data")
        _remove_run_dir(_run_dir(folder / "data"))
        _state_path(folder).unlink(missing_ok=True)
        return True


def _remove_run_dir(run_dir: Path) -> None:
    """What a stopped dockerd leaves under /run: its default network namespace, still bind-mounted under the exec
    root, and the empty folders and socket files around it."""
    netns = run_dir / "exec" / "netns" / "default"
    if os.path.ismount(netns):
        subprocess.run(["umount", str(netns)], capture_output=True, timeout=30, check=False)
    if not os.path.ismount(netns):
        shutil.rmtree(run_dir, ignore_errors=True)


def owner_of(folder: Path | None = None) -> str | None:
    """Who started ops' own engine, when it runs."""
    found = running(folder)
    return found[1].get("owner") if found else None
