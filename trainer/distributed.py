"""Process, device and distributed set-up, in one place so every entry point agrees on it.

One process (``python -m trainer``), ``torchrun --nproc_per_node G -m trainer`` on one node, or several
SageMaker hosts: when the job's hosts (``SM_HOSTS`` or resourceconfig.json) are more than one (or
``SM_NUM_GPUS`` > 1) and no launcher set ``WORLD_SIZE``, the entry point waits for the other hosts' names to
resolve (:func:`wait_for_hosts`) and re-executes itself under the torchrun command of
:func:`torchrun_command`, with the first host as the rendezvous, as SageMaker's own PyTorch toolkit does.

Every wait is bounded (:class:`LaunchConfig`): a host that never appears, never joins, or dies mid-run
makes the others fail with one line instead of hanging until the job's MaxRuntime.
"""

from __future__ import annotations

import collections
import datetime
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trainer.errors import ConfigError, TrainerError

RENDEZVOUS_PORT = 29500
"""torchrun's default master port; the hosts of a job are alone on their network, so a fixed one is safe."""

HOST_WAIT_ENV = "DEEPCLOUD_HOST_WAIT_S"
RENDEZVOUS_TIMEOUT_ENV = "DEEPCLOUD_RENDEZVOUS_TIMEOUT_S"
COLLECTIVE_TIMEOUT_ENV = "DEEPCLOUD_COLLECTIVE_TIMEOUT_S"
RENDEZVOUS_TIMEOUT_S = 600.0
"""torch's own default for the static rendezvous (``_default_timeout_seconds`` in
torch/distributed/elastic/rendezvous/static_tcp_rendezvous.py)."""


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(
            f"{name} must be a number of seconds > 0, not {raw!r}: unset it for the default of {default:g}"
        )
    return value


@dataclass(kw_only=True, slots=True)
class LaunchConfig:
    """How long a multi-host job waits for its hosts, from environment variables (defaults suit SageMaker)."""

    host_wait_s: float = 900.0
    """Seconds to wait for every other host's name to resolve (``DEEPCLOUD_HOST_WAIT_S``). SageMaker's PyTorch
    toolkit retries its lookups for 15 minutes (aws/sagemaker-pytorch-training-toolkit,
    ``src/sagemaker_pytorch_container/training.py``, ``_dns_lookup``: ``stop_max_delay=1000 * 60 * 15``)."""

    rendezvous_timeout_s: float = RENDEZVOUS_TIMEOUT_S
    """Seconds torchrun's static rendezvous waits for every host to join the first host's store
    (``DEEPCLOUD_RENDEZVOUS_TIMEOUT_S``)."""

    collective_timeout_s: float = 600.0
    """Seconds one collective (gradient all-reduce, barrier, checkpoint broadcast) may wait for a peer before
    the process fails (``DEEPCLOUD_COLLECTIVE_TIMEOUT_S``): what bounds the wait for a host that stops
    answering without closing its connections. It must exceed the longest gap between collectives, i.e.
    the first host writing (and uploading) a checkpoint while the others wait."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LaunchConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host_wait_s=_seconds(env, HOST_WAIT_ENV, defaults.host_wait_s),
            rendezvous_timeout_s=_seconds(env, RENDEZVOUS_TIMEOUT_ENV, defaults.rendezvous_timeout_s),
            collective_timeout_s=_seconds(env, COLLECTIVE_TIMEOUT_ENV, defaults.collective_timeout_s),
        )


@dataclass(frozen=True, slots=True)
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def visible_gpus(environ: dict[str, str] | None = None) -> int:
    """SM_NUM_GPUS when SageMaker sets it, else what torch sees."""
    env = os.environ if environ is None else environ
    return int(env["SM_NUM_GPUS"]) if env.get("SM_NUM_GPUS", "").isdigit() else torch.cuda.device_count()


def torchrun_command(
    hosts: tuple[str, ...],
    current_host: str,
    gpus: int,
    environ: Mapping[str, str] | None = None,
    *,
    rendezvous_timeout_s: float = RENDEZVOUS_TIMEOUT_S,
) -> list[str] | None:
    """The torchrun re-launch for a multi-host or multi-GPU SageMaker job, or None when one process will do.

    Static rendezvous on the first host (node ranks are SageMaker's host order, as in the toolkit's
    ``torch_distributed.py``), a bounded rendezvous timeout, and no restarts: a failed worker fails the
    job, which then resumes from its newest checkpoint when restarted, instead of torchrun restarting the
    workers of one host while the others have already given up.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or (len(hosts) <= 1 and gpus <= 1):
        return None
    if current_host not in hosts:
        raise ConfigError(f"SM_CURRENT_HOST {current_host!r} is not in SM_HOSTS {list(hosts)}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(hosts)}",
        f"--node_rank={hosts.index(current_host)}",
        f"--nproc_per_node={max(1, gpus)}",
        f"--master_addr={hosts[0]}",
        f"--master_port={RENDEZVOUS_PORT}",
        "--rdzv-backend=static",
        f"--rdzv-conf=timeout={math.ceil(rendezvous_timeout_s)}",
        "--max-restarts=0",
        "-m",
        "trainer",
        "train",
    ]


def worker_environ(network_interface_name: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables the workers need on top of ours: the interface gloo and NCCL talk on.

    SageMaker's toolkit sets ``NCCL_SOCKET_IFNAME`` from resourceconfig.json's ``network_interface_name``
    (aws/sagemaker-training-toolkit ``src/sagemaker_training/torch_distributed.py``, ``_setup``); gloo reads
    ``GLOO_SOCKET_IFNAME`` the same way, and without it picks the address this machine's own hostname
    resolves to, which SageMaker says not to trust. Values already set win.
    """
    env = os.environ if environ is None else environ
    if not network_interface_name:
        return {}
    return {name: network_interface_name for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if name not in env}


def _resolve_within(name: str, seconds: float) -> tuple[str | None, str]:
    """(address, '') or (None, why) for one lookup, given at most ``seconds``: getaddrinfo cannot be
    interrupted, so it runs in a daemon thread that is abandoned when it takes too long."""
    result: dict[str, object] = {}

    def lookup() -> None:
        try:
            result["address"] = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            result["error"] = exc.strerror or str(exc)

    thread = threading.Thread(target=lookup, name=f"resolve-{name}", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if "address" in result:
        return str(result["address"]), ""
    return None, str(result.get("error", "the lookup did not answer"))


def wait_for_hosts(
    names: tuple[str, ...],
    wait_s: float,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Wait until every name in ``names`` resolves; {name: address}. Raises TrainerError after ``wait_s``.

    SageMaker: "Hostname information may not be immediately available to the algorithm container. We
    recommend adding a retry policy on hostname resolution operations as nodes become available in the
    cluster" (the Distributed Training Configuration section of
    https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html).
    Its PyTorch toolkit blocks the same way before launching (``_dns_lookup`` in
    aws/sagemaker-pytorch-training-toolkit ``src/sagemaker_pytorch_container/training.py``, exponential
    back-off from 0.1 s to 30 s); the back-off here stops at 1 s, since a lookup of a name in
    /etc/hosts or the VPC resolver costs nothing.
    """
    started = clock()
    deadline = started + wait_s
    found: dict[str, str] = {}
    why: dict[str, str] = {}
    delay, announced = 0.1, False
    while True:
        for name in names:
            if name not in found:
                address, why[name] = _resolve_within(name, deadline - clock())
                if address is not None:
                    found[name] = address
        missing = [n for n in names if n not in found]
        if not missing:
            say("hosts " + " ".join(f"{n}={found[n]}" for n in names) + f" resolved in {clock() - started:.1f}s")
            return found
        left = deadline - clock()
        if left <= 0:
            name = missing[0]
            raise TrainerError(
                f"host {name!r} of this job did not resolve within {wait_s:g}s ({why[name]}): "
                "the hosts must reach each other by name; on SageMaker retry the job, elsewhere "
                f"check the name service (the wait is {HOST_WAIT_ENV})"
            )
        if not announced:
            say(f"waiting up to {wait_s:g}s for hosts {' '.join(missing)} to resolve")
            announced = True
        time.sleep(min(delay, left))
        delay = min(1.0, delay * 2)


def run_launcher(
    command: list[str],
    env: Mapping[str, str],
    on_term: Callable[[subprocess.Popen], None],
    stop_pending: Callable[[], bool] = lambda: False,
    keep_lines: int = 200,
) -> tuple[int, list[str]]:
    """Run torchrun with its stderr copied through to ours line by line (the log keeps all of it); return its
    exit status and the last ``keep_lines`` lines of that stderr, from which a failure is summed up.

    SIGTERM calls ``on_term(proc)`` while it runs; ``stop_pending()`` tells of one that arrived just before."""
    proc = subprocess.Popen(command, env=dict(env), stderr=subprocess.PIPE, text=True, errors="replace")
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    stderr = proc.stderr
    if stderr is None:  # Popen always makes the pipe asked for; this tells the type checker so
        raise RuntimeError("the launcher's stderr pipe was not created")

    def copy() -> None:
        for line in stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))

    copier = threading.Thread(target=copy, name="torchrun-stderr", daemon=True)
    copier.start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: on_term(proc))
    if stop_pending():
        on_term(proc)
    try:
        returncode = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    copier.join(timeout=10)
    return returncode, list(tail)


def workers_stopped(tail: list[str], exit_stopped: int) -> bool:
    """Whether torchrun failed only because its workers stopped on request (each exited ``exit_stopped``), as
    when another host got SIGTERM and every rank checkpointed and stopped with it."""
    codes = [int(m.group(1)) for m in (re.search(r"^\s*exitcode\s*:\s*(-?\d+)", line) for line in tail) if m]
    return bool(codes) and all(code == exit_stopped for code in codes)


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def launcher_failure(returncode: int, tail: list[str], master: str, launch: LaunchConfig) -> str:
    """One line for a torchrun that failed without any worker of this host saying why in output/failure."""
    errors = [m for m in map(_ERROR_LINE.match, tail) if m]
    last = errors[-1] if errors else None
    if last and last.group(1) in ("DistStoreError", "DistNetworkError"):
        return (
            f"the hosts did not all meet at torchrun's rendezvous on {master}:{RENDEZVOUS_PORT} within "
            f"{launch.rendezvous_timeout_s:g}s ({last.group(2)}): every host must start and reach {master} on "
            f"TCP port {RENDEZVOUS_PORT} (the wait is {RENDEZVOUS_TIMEOUT_ENV})"
        )
    signals = [m for m in (re.search(r"Signal (\d+) \((SIG\w+)\) received by PID", line) for line in tail) if m]
    if signals:
        name = signals[-1].group(2)
        hint = " (the kernel's out-of-memory killer does this)" if name == "SIGKILL" else ""
        return f"a training process on this host was killed by {name}{hint}: its log above says how far it got"
    if last:
        return f"torchrun exited with status {returncode}: {last.group(1)}: {last.group(2)}"
    return f"torchrun exited with status {returncode}: its log above says why"


_PEER_WORDS = re.compile(r"timed out|timeout|connection|peer|remote", re.IGNORECASE)


def peer_lost(exc: BaseException) -> str | None:
    """The one line for a collective that failed because another process of the job went away, else None.

    gloo reports a dead peer as a RuntimeError naming its own source file (e.g. ``gloo/transport/tcp/pair.cc``
    "Connection reset by peer", or "Timed out waiting ..." after the collective timeout); NCCL and the
    store raise ``torch.distributed.DistError`` subclasses, which also cover faults of this host (a CUDA
    error inside NCCL), so those count only when they speak of a timeout or a connection.
    """
    text = str(exc)
    gloo = isinstance(exc, RuntimeError) and "gloo" in text
    if not gloo and not (isinstance(exc, dist.DistError) and _PEER_WORDS.search(text)):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    detail = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", first)  # gloo's "[file.cc:537]" prefix
    detail = detail.split(". This is typically")[0].rstrip(".")
    return (
        f"lost contact with another host of the job ({detail}): it stopped or its network went away, and "
        "its own log says why; restart the job to resume from the newest checkpoint"
    )


def compute_init(device: str, seed: int, deterministic: bool) -> Runtime:
    """Join the process group when launched by torchrun, pick the device, seed every RNG per rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hyperparameter 'device' is 'cuda' but no CUDA device is visible: use auto or cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
                "launch at most one process per GPU"
            )
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    else:
        resolved = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # Bounded, so that a host which stops answering without closing its connections fails the others.
        timeout = datetime.timedelta(seconds=LaunchConfig.from_environ().collective_timeout_s)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    # Each rank its own stream (dropout masks differ per rank), reproducible from the seed.
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def compute_cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank when it is true on any rank (so all ranks stop at the same step)."""
    if not runtime.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def collective_device() -> torch.device:
    """Where a tensor must live for the process group's backend: NCCL only moves CUDA tensors, gloo CPU ones."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
