"""`make bench-serve`: our server against TorchServe 0.12, today's peer servers and bare Starlette floors, same models.

::

    python -m bench.serve                              # both models, all three servers, 5 s warm-up + 10 s each
    python -m bench.serve --duration 30 --threads 2
    python -m bench.serve --models cnn --keep          # one model; keep the work dir (artifacts, .mar, logs)
    python -m bench.serve --servers ours,bare          # without TorchServe and the peers (no Java, no pip install)
    python -m bench.serve --servers ours,litserve,pytriton,mlserver --duration 10   # ours beside today's servers
    python -m bench.serve --models mlp --servers ours-mar,bare-mar,ours-script,bare-script   # user code only
    python -m bench.serve --ours-args=--no-access-log  # extra flags for our server

What it needs, installed when missing (and printed): ``wrk`` (Debian package, ``apt-get install wrk``) and
``torchserve`` + ``torch-model-archiver`` (``pip install -r requirements/bench.txt`` into this venv);
TorchServe also needs Java 11+ on PATH or in ``JAVA_HOME``; each peer server gets its own virtual environment,
``.venv-peers/<name>/``, made from ``requirements/peers/<name>.txt`` after ``torch==2.13.0`` (bench/peers.py:
torch stays the CPU build, checked after the install). ``--no-install`` stops instead.

Models. The bench writes two artifacts in the format of docs/artifact.md (format_version 1: ``model.pt2``
from ``torch.export`` with a dynamic batch dimension, ``manifest.json`` with its sha256), weights seeded
with ``torch.manual_seed(0)``, both normalising ``x / 255`` in the program as the trainer's models do:

- **mlp**: ``[1, 8, 8]`` pixels, flattened, 64 -> 32 -> 10. A forward pass costs microseconds, so its
  figures measure the HTTP path: decoding, validation, scheduling, encoding.
- **cnn**: ``[3, 32, 32]`` pixels (a 12 KB JSON body), three 3x3 convolutions (128, 128, 256 channels,
  one 2x2 max-pool), global average pool, 256 -> 10. Compute-bound: milliseconds per instance.

Servers. Each (model, server) pair gets a fresh server process started by the bench, bound to 127.0.0.1
on free ports, in its own session; it is stopped (SIGTERM, then SIGKILL to every process of that
session) before the next one starts, and on error or Ctrl-C too, so one server runs at a time. Every
server is given the same number of torch threads (``--threads``, default ``torch.get_num_threads()``).

- **ours**: ``python -m serving serve --model-store DIR --models NAME=NAME --threads T
  [--max-batch-size B --max-batch-delay-ms MS]``, loaded on ``POST /predictions/NAME``. The mlp runs with
  the server's defaults (batches of up to 32 of whatever queued up during the previous forward pass, no
  waiting): what a user gets; TorchServe runs at its default batch 1, the bare floor one at a time. The
  cnn runs ours and TorchServe both with ``--batch-size`` 16 and ``--batch-delay-ms`` 10. An older server without
  ``--model-store`` is run as ``--model-dir`` on ``POST /invocations`` (without batching; the row says so).
  It keeps its default JSON access-log line per request (``--ours-args=--no-access-log`` drops it).
- **torchserve**: ``torchserve --start --ncs --disable-token-auth`` with a config.properties that binds
  every API (inference, management, metrics, both gRPC ports) to 127.0.0.1, disables token auth, the
  metrics API and system metrics, and one worker per model. The .mar holds the same ``model.pt2`` and
  ``manifest.json`` and bench/serve_support/torchserve_handler.py, which does what our server does
  per request (decode, the same checks, one forward over the batch, softmax, argmax, the same JSON).
  Its model-config.yaml sets ``batchSize``/``maxBatchDelay`` equal to ours (1 for the mlp); the bench
  reads them back from the management API. Logging: TorchServe's built-in log4j2.xml writes several
  DEBUG lines and metrics per request, so by default (``--torchserve-logging quiet``) it runs with
  serve_support/log4j2-quiet.xml: an access-log line per request, as our server writes by default,
  and warnings. Its pid file, sockets, logs and extracted models live in the work dir (``TMPDIR``,
  ``TEMP``, ``LOG_LOCATION``; the sockets in a short /tmp/dc-ts-* when that path is too long for one).
- **bare**: bench/serve_support/bare_app.py, a Starlette app on uvicorn (one worker, no access log)
  whose one endpoint json-decodes, runs the program under ``torch.inference_mode`` on the event loop
  and returns the same JSON. No validation, no batching: the floor for a Python HTTP server.
- **ours-mar / bare-mar**, **ours-script / bare-script** (mlp only; the cnn's figures would be its forward
  pass, whoever calls it): user code served two ways. ``-mar``: the .mar TorchServe gets (the handler
  above); ``-script``: a SageMaker PyTorch artifact of the same program, ``code/inference.py`` from
  serve_support/inference_script.py (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``, the same
  checks and JSON) and no manifest. ``ours-*`` is our server at its defaults on
  ``/predictions/mlp``; ``bare-*`` is serve_support/bare_kinds.py, a Starlette endpoint that calls the same
  code the way our server does (the handler's ``handle`` with one ``{"body": parsed JSON}`` per call, the
  script's three functions per request) on the event loop, and nothing else.
- **litserve**, **pytriton** (Triton through ``nvidia-pytriton``), **mlserver**: today's servers, each in its
  own venv and deployed as its docs say (bench/peers.py and their apps, serve_support/peer_*.py), with its own
  dynamic batching at the cnn's ``--batch-size``/``--batch-delay-ms`` and its defaults for the mlp, the same
  torch threads and the same checks and JSON as the TorchServe handler; loopback only, metrics off. LitServe
  takes the workload's body on ``/predict``; Triton and MLServer speak the Open Inference Protocol, so they
  get the same instance as a v2 JSON tensor and their three output tensors are checked as predictions.
  **bentoml** and **rayserve** likewise (BentoML's answer, a list of predictions, is wrapped before the check).
- **raw forward** (cnn only): no server; this process runs the program on batches of ``--batch-size``
  with the same thread count, the ceiling for what batching can reach. Twice: as exported
  (``torch.export.load``, NCHW: what TorchServe and the bare floor run), and the module our server runs,
  loaded and tuned by the server's own loader (serving/program.py, serving/tuning.py: channels-last,
  convolution + ReLU fused when they agree with the exported model), fed as its inference thread feeds it.
  The goal ratio is taken against the faster of the two. It is measured right after our server, as this
  machine's speed drifts by several percent over minutes.

Method. Before any load, one request per server must return the index, label and probabilities (within
1e-4) that this process computes for the same input, so a broken server cannot post a fast-looking
figure. Then ``wrk`` (``--latency``, ``-t --wrk-threads``) with a Lua script that POSTs the same JSON
body (``{"instances": [one instance]}``, integer pixels), ``--connections-mlp`` (16) or
``--connections-cnn`` (32) keep-alive connections: a ``--warmup`` run (5 s) whose figures are dropped,
then the ``--duration`` run (10 s) that is reported. A run with an error status (wrk's "Non-2xx or 3xx
responses", which counts 4xx and 5xx) or a socket error is a failure, not a figure. requests/s, p50 and
p99 come from wrk; wrk runs on the same cores as the server, equally for every server. Peak RSS is the
largest sum, over every live process of the server's session (TorchServe: the Java front end and its
Python worker), of the resident set (/proc/PID/statm), sampled every 0.1 s through both runs. "others %"
is the share of all CPUs used by processes other than the server, wrk and this bench during the measured
run (/proc/stat). Above 10% the machine was not quiet: the run is repeated up to ``--retries`` (2)
times, the quietest run is reported, and a warning names the rows that stayed noisy (on two shared cores
a busy neighbour can halve a figure). The raw forward is timed the same way.

Goals: mlp ours/bare requests/s >= 0.85; cnn ours/torchserve requests/s >= 2; cnn ours requests/s
(one instance each) / raw forward samples/s >= 0.85; ours p99 < torchserve p99 for both models; ours
peak RSS <= 0.5x TorchServe's for both models; for each kind of user code, ours-*/bare-* requests/s >= 0.85
and p99 no worse (<= 1); against the peers that ran (n/a when none did; the target names the peer): mlp
requests/s ours/best peer >= 4, cnn >= 1.5, p99 the lowest of all (ours/lowest peer < 1) and peak RSS
ours <= 0.6x the leanest peer's, per model. Rounds: every server is measured ``--rounds`` (2) times, one
round of all of them after the other; each goal is computed within each round only (this machine's speed
drifts by tens of percent over minutes, so rows of different rounds are never divided), the worst round's
value is the one judged (a goal holds "in every round"), and the goal table gives the range over the rounds.
Exit status: 0 when every goal that could be measured
passed, 3 when one was missed (``MISS``; ``--allow-miss`` exits 0 then), 1 when a server or a run
failed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import peers
from bench.serve_support.torchserve_config import write_config
from bench.train import cpu_name

REPO = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "serve_support"
REQUIREMENTS = REPO / "requirements" / "bench.txt"
SERVERS = ("ours", "torchserve", "bare", "ours-mar", "bare-mar", "ours-script", "bare-script", *peers.PEERS)
PEERS = peers.PEERS
"""Today's servers (bench/peers.py), each in its own venv: the ratio goals take the best (or leanest) that ran."""
KIND_SERVERS = ("ours-mar", "bare-mar", "ours-script", "bare-script")
BASELINE = "ours@before"
"""Our server run from another checkout (``--baseline-tree``), measured right after ours: a refactor's before."""
"""User code served by ours and by a bare endpoint calling it the same way: the mlp only, where the serving
path is the cost (the cnn's figures are its forward pass, whoever calls it)."""
MODELS = ("mlp", "cnn")
GOAL_MLP_VS_BARE = 0.85
GOAL_CNN_VS_TORCHSERVE = 2.0
GOAL_CNN_VS_RAW = 0.85
GOAL_MEMORY = 0.5
GOAL_KIND_VS_BARE = 0.85
GOAL_MLP_VS_PEER = 4.0
GOAL_CNN_VS_PEER = 1.5
GOAL_MEMORY_VS_PEER = 0.6
SAMPLE_SECONDS = 0.1
QUIET = 0.10
MAX_BATCH = 4096
"""The artifacts' dynamic batch bound, as the trainer exports them."""
LABELS = {
    "mlp": [str(i) for i in range(10)],
    "cnn": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


class BenchError(Exception):
    """A server or a run failed; the message says which and why."""


# ------------------------------------------------------------------------------------------------------- artifacts


def _build_model(name: str):
    import torch
    from torch import nn

    class Normalize(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
            self.register_buffer("std", torch.full((1, channels, 1, 1), 0.25))

        def forward(self, x):
            return (x / 255.0 - self.mean) / self.std

    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(Normalize(1), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), [1, 8, 8]
    return nn.Sequential(
        Normalize(3),
        nn.Conv2d(3, 128, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, 10),
    ), [3, 32, 32]


def write_artifact(name: str, model_dir: Path) -> dict[str, Any]:
    """model.pt2 + manifest.json as docs/artifact.md describes them (format_version 1)."""
    import hashlib

    import torch

    model, shape = _build_model(name)
    model.eval()
    model_dir.mkdir(parents=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = torch.rand(2, *shape) * 255
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, model_dir / "model.pt2")
    digest = hashlib.sha256((model_dir / "model.pt2").read_bytes()).hexdigest()
    channels = shape[0]
    manifest = {
        "format_version": 1,
        "model": {"file": "model.pt2", "format": "torch.export", "sha256": digest, "max_batch_size": MAX_BATCH},
        "input": {"dtype": "float32", "shape": shape, "layout": "NCHW"},
        "output": {"type": "logits", "shape": [10]},
        "preprocessing": {
            "pixel_range": [0, 255],
            "color_mode": "L" if channels == 1 else "RGB",
            "size": shape[1:],
            "normalization": {"mean": [0.5] * channels, "std": [0.25] * channels, "applied": "in_model"},
        },
        "labels": LABELS[name],
        "training": {
            "config": {"model": f"bench.serve {name}", "seed": 0},
            "torch_version": torch.__version__,
            "git_revision": "unknown",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        },
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@dataclass(slots=True)
class Workload:
    name: str
    model_dir: Path
    manifest: dict[str, Any]
    body: Path
    """``{"instances": [x]}``: the request every server gets."""
    expected: dict[str, Any]
    """The prediction this process computes for ``x`` with the saved program."""
    connections: int
    batch: int
    delay_ms: int
    ours_defaults: bool = False
    """Run ours with its own batching defaults (no batch flags) rather than with ``batch``/``delay_ms``."""


def make_workload(
    name: str, store: Path, connections: int, batch: int, delay_ms: int, ours_defaults: bool = False
) -> Workload:
    """The artifact, one request body, and its expected answer: of 16 seeded random inputs, the one whose
    top two logits are furthest apart, so float noise (batched vs unbatched) cannot flip the argmax."""
    import numpy as np
    import torch

    manifest = write_artifact(name, store / name)
    module = torch.export.load(store / name / "model.pt2").module()
    rng = np.random.default_rng(0)
    candidates = rng.integers(0, 256, size=(16, *manifest["input"]["shape"])).astype(np.float32)
    with torch.inference_mode():
        logits = module(torch.from_numpy(candidates))
    top2 = logits.topk(2, dim=1).values
    best = int((top2[:, 0] - top2[:, 1]).argmax())
    probs = torch.softmax(logits[best], dim=0).tolist()
    index = int(logits[best].argmax())
    body = store.parent / f"body-{name}.json"
    body.write_text(json.dumps({"instances": [candidates[best].astype(int).tolist()]}, separators=(",", ":")))
    expected = {"index": index, "label": manifest["labels"][index], "probabilities": probs}
    return Workload(name, store / name, manifest, body, expected, connections, batch, delay_ms, ours_defaults)


# ----------------------------------------------------------------------------------------------------- processes


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields from the state on (index 0 = field 3), or None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the bench starts every server as a session leader)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == sid:
                found.append(int(entry.name))
    return found


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _busy_cpu_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; steal counts as busy: another VM ran)."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class MemorySampler:
    """Peak of the summed RSS of every live process in a session, sampled every SAMPLE_SECONDS."""

    def __init__(self, sid: int) -> None:
        self.sid, self.peak, self._stop = sid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids, tick = session_pids(self.sid), 0
        while True:
            self.peak = max(self.peak, sum(_rss_bytes(pid) for pid in pids))
            if self._stop.wait(SAMPLE_SECONDS):
                return
            tick += 1
            if tick % 10 == 0:  # the process list rarely changes; rescanning /proc costs more than sampling
                pids = session_pids(self.sid)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass(slots=True)
class Server:
    kind: str
    model: str
    proc: subprocess.Popen
    port: int
    path: str
    log: Path
    env: dict[str, str]
    cwd: Path
    settings: str
    ping: bool = False
    """True when GET /ping answers 503 until loaded (ours): wait for 200 before the first request."""
    management_port: int | None = None
    body: Path | None = None
    """The request body when the server speaks another protocol (Triton: KServe v2); None: the workload's."""
    answer: Callable[[bytes], bytes] | None = None
    """Turns its answer into ``{"predictions": [...]}`` before the check (Triton's output tensors)."""

    @property
    def sid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return bool(session_pids(self.sid))


RUNNING: list[Server] = []
SCRATCH: list[Path] = []
"""Directories outside the work dir to remove at the end (TorchServe's socket dir when the work dir's path is long)."""


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(server: Server) -> None:
    """Stop every process of the server's session: TorchServe's own --stop first, then SIGTERM, then SIGKILL."""
    if server.kind == "torchserve" and server.alive():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [_venv_script("torchserve"), "--stop"],
                cwd=server.cwd,
                env=server.env,
                timeout=60,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        _wait_gone(server, 20)
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        pids = session_pids(server.sid)
        if not pids:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.sid, sig)
        _signal_pids(pids, sig)  # members that left the process group but not the session
        _wait_gone(server, grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=5)
    if server.alive():
        print(f"warning: processes {session_pids(server.sid)} of {server.kind} survived SIGKILL", file=sys.stderr)
    if server in RUNNING:  # only now: a Ctrl-C while stopping leaves it to main's cleanup
        RUNNING.remove(server)


def _wait_gone(server: Server, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=0.05)  # reap the leader, else it stays a zombie in our own list
        if not server.alive():
            return
        time.sleep(0.1)


def _spawn(
    kind: str,
    wl: Workload,
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    port: int,
    path: str,
    settings: str,
    **extra: Any,
) -> Server:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(kind, wl.name, proc, port, path, log, env, cwd, settings, **extra)
    RUNNING.append(server)
    return server


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def _venv_script(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


# ------------------------------------------------------------------------------------------------------- servers


@dataclass(slots=True)
class Context:
    work: Path
    store: Path
    threads: int
    env: dict[str, str]
    ours_cli: str
    """'store' (--model-store/--models/batching flags) or 'model-dir' (the older one-model server)."""
    ours_args: list[str]
    startup_timeout: float
    torchserve_logging: str
    baseline: Path | None = None
    """``--baseline-tree``: another checkout whose server runs as BASELINE, with the same flags."""
    baseline_cli: str = "store"


def ours_cli(tree: Path = REPO) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--help"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    needed = ("--model-store", "--models", "--threads", "--max-batch-size", "--max-batch-delay-ms")
    return "store" if all(flag in out for flag in needed) else "model-dir"


def start_ours(ctx: Context, wl: Workload, tree: Path = REPO, kind: str = "ours") -> Server:
    """Our server from the checkout ``tree`` (this one, or ``--baseline-tree`` as BASELINE): its own process,
    its cwd and PYTHONPATH at that tree, with this venv's interpreter and the same flags."""
    port = free_ports(1)[0]
    base = [sys.executable, "-m", "serving", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cli = ctx.ours_cli if tree == REPO else ctx.baseline_cli
    if cli == "store":
        cmd = [
            *base,
            "--model-store",
            str(ctx.store),
            "--models",
            f"{wl.name}={wl.name}",
            "--threads",
            str(ctx.threads),
        ]
        if wl.ours_defaults:
            path, settings = f"/predictions/{wl.name}", "defaults: batch<=32, 0 ms"
        else:
            cmd += ["--max-batch-size", str(wl.batch), "--max-batch-delay-ms", str(wl.delay_ms)]
            path, settings = f"/predictions/{wl.name}", f"batch {wl.batch}, {wl.delay_ms} ms"
    else:
        cmd = [*base, "--model-dir", str(wl.model_dir)]
        path, settings = "/invocations", "no batching (old CLI)"
    env = ctx.env if tree == REPO else {**ctx.env, "PYTHONPATH": str(tree)}
    log = ctx.work / f"{kind.replace('@', '-')}-{wl.name}.log"
    return _spawn(kind, wl, [*cmd, *ctx.ours_args], env, tree, log, port, path, settings, ping=True)


def start_baseline(ctx: Context, wl: Workload) -> Server:
    if ctx.baseline is None:
        raise BenchError(f"{BASELINE} needs --baseline-tree")
    return start_ours(ctx, wl, tree=ctx.baseline, kind=BASELINE)


def start_bare(ctx: Context, wl: Workload) -> Server:
    port = free_ports(1)[0]
    cmd = [
        sys.executable,
        "-m",
        "bench.serve_support.bare_app",
        "--model-dir",
        str(wl.model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(ctx.threads),
    ]
    return _spawn("bare", wl, cmd, ctx.env, REPO, ctx.work / f"bare-{wl.name}.log", port, "/predict", "one at a time")


def fresh_dir(ctx: Context, name: str) -> Path:
    """A new folder of the work dir for one server start: each round starts every server afresh."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.work))


def handler_files(ctx: Context, wl: Workload, home: Path) -> list[Path]:
    """What the .mar holds: the program, the manifest, the handler and its settings (threads)."""
    (home / "bench_handler.json").write_text(json.dumps({"threads": ctx.threads}))
    return [
        wl.model_dir / "model.pt2",
        wl.model_dir / "manifest.json",
        SUPPORT / "torchserve_handler.py",
        home / "bench_handler.json",
    ]


def write_mar(ctx: Context, wl: Workload, home: Path, store: Path, log: Path) -> Path:
    """The .mar TorchServe serves (torch-model-archiver), with the workload's batch settings."""
    model, manifest, handler, settings = handler_files(ctx, wl, home)
    (home / "model-config.yaml").write_text(
        f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {wl.batch}\nmaxBatchDelay: {wl.delay_ms}\nresponseTimeout: 120\n"
    )
    archive = [
        _venv_script("torch-model-archiver"),
        "--model-name",
        wl.name,
        "--version",
        "1.0",
        "--serialized-file",
        str(model),
        "--handler",
        str(handler),
        "--extra-files",
        f"{manifest},{settings}",
        "--config-file",
        str(home / "model-config.yaml"),
        "--export-path",
        str(store),
        "--force",
    ]
    with log.open("ab") as out:
        done = subprocess.run(
            archive, cwd=home, env=ctx.env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False
        )
    if done.returncode != 0:
        raise BenchError(f"torch-model-archiver exited {done.returncode}:\n{_tail(log)}")
    return store / f"{wl.name}.mar"


def write_script_artifact(wl: Workload, root: Path) -> Path:
    """A SageMaker PyTorch artifact of the same program: code/inference.py, no manifest.json."""
    (root / "code").mkdir(parents=True)
    shutil.copy(wl.model_dir / "model.pt2", root / "model.pt2")
    shutil.copy(SUPPORT / "inference_script.py", root / "code" / "inference.py")
    manifest = wl.manifest
    (root / "bench_model.json").write_text(
        json.dumps(
            {
                "labels": manifest["labels"],
                "shape": manifest["input"]["shape"],
                "pixel_range": manifest["preprocessing"]["pixel_range"],
            }
        )
    )
    return root


def start_ours_kind(ctx: Context, wl: Workload, kind: str) -> Server:
    """Ours serving the user code: the .mar TorchServe gets, or the inference.py artifact; ours' defaults."""
    home = fresh_dir(ctx, f"{kind}-{wl.name}")
    store = home / "store"
    store.mkdir(parents=True)
    log = ctx.work / f"{kind}-{wl.name}.log"
    entry = (
        write_mar(ctx, wl, home, store, log).name
        if kind == "ours-mar"
        else write_script_artifact(wl, store / wl.name).name
    )
    port = free_ports(1)[0]
    cmd = [
        sys.executable,
        "-m",
        "serving",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-store",
        str(store),
        "--models",
        f"{wl.name}={entry}",
        "--threads",
        str(ctx.threads),
        *ctx.ours_args,
    ]
    return _spawn(
        kind, wl, cmd, ctx.env, REPO, log, port, f"/predictions/{wl.name}", "defaults: batch<=32, 0 ms", ping=True
    )


def start_bare_kind(ctx: Context, wl: Workload, kind: str) -> Server:
    """The same user code called from a bare Starlette endpoint (bench/serve_support/bare_kinds.py)."""
    home = fresh_dir(ctx, f"{kind}-{wl.name}")
    if kind == "bare-mar":
        for path in handler_files(ctx, wl, home):
            if path.parent != home:
                shutil.copy(path, home / path.name)
        model_dir, style = home, "handler"
    else:
        model_dir, style = write_script_artifact(wl, home / wl.name), "script"
    port = free_ports(1)[0]
    cmd = [
        sys.executable,
        "-m",
        "bench.serve_support.bare_kinds",
        "--kind",
        style,
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(ctx.threads),
    ]
    return _spawn(kind, wl, cmd, ctx.env, REPO, ctx.work / f"{kind}-{wl.name}.log", port, "/predict", "one at a time")


def start_torchserve(ctx: Context, wl: Workload) -> Server:
    home = fresh_dir(ctx, f"torchserve-{wl.name}")
    store, tmp, logs = home / "model-store", home / "tmp", home / "logs"
    for folder in (store, tmp, logs):
        folder.mkdir(parents=True)
    if len(str(tmp / ".ts.sock.9000")) > 100:  # its workers' Unix sockets live there: sun_path holds 108 bytes
        tmp = Path(tempfile.mkdtemp(prefix="dc-ts-", dir="/tmp"))
        SCRATCH.append(tmp)
    log = ctx.work / f"torchserve-{wl.name}.log"
    write_mar(ctx, wl, home, store, log)
    ports = free_ports(5)
    inference, management = ports[0], ports[1]
    write_config(home / "config.properties", store, ports)
    env = {**ctx.env, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)}
    cmd = [
        _venv_script("torchserve"),
        "--start",
        "--ncs",
        "--disable-token-auth",
        "--ts-config",
        str(home / "config.properties"),
        "--model-store",
        str(store),
        "--models",
        f"{wl.name}={wl.name}.mar",
    ]
    if ctx.torchserve_logging == "quiet":
        cmd += ["--log-config", str(SUPPORT / "log4j2-quiet.xml")]
    return _spawn(
        "torchserve",
        wl,
        cmd,
        env,
        home,
        log,
        inference,
        f"/predictions/{wl.name}",
        f"batch {wl.batch}, {wl.delay_ms} ms",
        management_port=management,
    )


def start_litserve(ctx: Context, wl: Workload) -> Server:
    """LitServe (bench/serve_support/peer_litserve.py) in .venv-peers/litserve; its batching for the cnn."""
    port = free_ports(1)[0]
    cmd = [
        str(peers.venv_python("litserve")),
        str(SUPPORT / "peer_litserve.py"),
        "--model-dir",
        str(wl.model_dir),
        "--port",
        str(port),
        "--threads",
        str(ctx.threads),
    ]
    settings = "defaults: batch 1"
    if not wl.ours_defaults:
        cmd += ["--max-batch-size", str(wl.batch), "--batch-timeout-ms", str(wl.delay_ms)]
        settings = f"batch {wl.batch}, {wl.delay_ms} ms"
    tmp = peers.short_dir("dc-ls-")  # multiprocessing's pymp-* socket dirs, which a SIGTERM leaves behind
    SCRATCH.append(tmp)
    env = {**peers.peer_env("litserve", ctx.env), "TMPDIR": str(tmp)}
    return _spawn("litserve", wl, cmd, env, ctx.work, ctx.work / f"litserve-{wl.name}.log", port, "/predict", settings)


def start_pytriton(ctx: Context, wl: Workload) -> Server:
    """Triton through nvidia-pytriton (bench/serve_support/peer_pytriton.py); Triton's dynamic batcher for the cnn."""
    http, grpc = free_ports(2)
    workspace = peers.short_dir("dc-pt-")  # its sockets live there: keep the path short
    SCRATCH.append(workspace)
    cmd = [
        str(peers.venv_python("pytriton")),
        str(SUPPORT / "peer_pytriton.py"),
        "--model-dir",
        str(wl.model_dir),
        "--name",
        wl.name,
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--threads",
        str(ctx.threads),
        "--workspace",
        str(workspace / "ws"),
    ]
    settings = "defaults: batch<=4, 0 ms"
    if not wl.ours_defaults:
        cmd += ["--max-batch-size", str(wl.batch), "--max-queue-delay-ms", str(wl.delay_ms)]
        settings = f"batch {wl.batch}, {wl.delay_ms} ms"
    env = {**peers.peer_env("pytriton", ctx.env), "TMPDIR": str(workspace)}
    body = peers.v2_body(wl.body, ctx.work / f"body-{wl.name}-v2.json")
    return _spawn(
        "pytriton",
        wl,
        cmd,
        env,
        ctx.work,
        ctx.work / f"pytriton-{wl.name}.log",
        http,
        f"/v2/models/{wl.name}/infer",
        settings,
        body=body,
        answer=peers.v2_predictions,
    )


def start_mlserver(ctx: Context, wl: Workload) -> Server:
    """MLServer with the custom runtime bench/serve_support/peer_mlserver.py; its adaptive batching for the cnn."""
    ports = free_ports(3)
    home = peers.write_mlserver_settings(
        fresh_dir(ctx, f"mlserver-{wl.name}"),
        wl.name,
        wl.model_dir,
        ctx.threads,
        ports,
        None if wl.ours_defaults else wl.batch,
        wl.delay_ms,
    )
    cmd = [str(peers.VENVS / "mlserver" / "bin" / "mlserver"), "start", str(home)]
    settings = "defaults: no batching" if wl.ours_defaults else f"batch {wl.batch}, {wl.delay_ms} ms"
    body = peers.v2_body(wl.body, ctx.work / f"body-{wl.name}-v2.json")
    return _spawn(
        "mlserver",
        wl,
        cmd,
        peers.peer_env("mlserver", ctx.env),
        home,
        ctx.work / f"mlserver-{wl.name}.log",
        ports[0],
        f"/v2/models/{wl.name}/infer",
        settings,
        body=body,
        answer=peers.v2_predictions,
    )


def start_bentoml(ctx: Context, wl: Workload) -> Server:
    """BentoML (bench/serve_support/peer_bentoml.py: ``bentoml serve``); its adaptive batching for the cnn."""
    port = free_ports(1)[0]
    batch = None if wl.ours_defaults else wl.batch
    cmd = [
        str(peers.venv_python("bentoml")),
        str(SUPPORT / "peer_bentoml.py"),
        *peers.bentoml_args(wl.model_dir, ctx.threads, port, batch),
    ]
    settings = (
        "defaults: no batching"
        if batch is None
        else f"batch {batch}, adaptive wait (max_latency {peers.BENTOML_MAX_LATENCY_MS} ms)"
    )
    home = fresh_dir(ctx, f"bentoml-{wl.name}")
    env = {**peers.peer_env("bentoml", ctx.env), "BENTOML_HOME": str(home), "TMPDIR": str(home)}
    return _spawn(
        "bentoml",
        wl,
        cmd,
        env,
        ctx.work,
        ctx.work / f"bentoml-{wl.name}.log",
        port,
        "/predict",
        settings,
        answer=peers.bentoml_predictions,
    )


def start_rayserve(ctx: Context, wl: Workload) -> Server:
    """Ray Serve (bench/serve_support/peer_rayserve.py); ``@serve.batch`` for the cnn."""
    port = free_ports(1)[0]
    tmp = peers.short_dir("dc-ray-")  # Ray's session dir and its Unix sockets (108-byte paths): removed at the end
    SCRATCH.append(tmp)
    batch = None if wl.ours_defaults else wl.batch
    cmd = [
        str(peers.venv_python("rayserve")),
        str(SUPPORT / "peer_rayserve.py"),
        *peers.rayserve_args(wl.model_dir, ctx.threads, port, tmp, batch, wl.delay_ms),
    ]
    settings = "defaults: no batching" if batch is None else f"batch {batch}, {wl.delay_ms} ms"
    env = {**peers.peer_env("rayserve", ctx.env), "TMPDIR": str(tmp), "RAY_TMPDIR": str(tmp)}
    return _spawn("rayserve", wl, cmd, env, ctx.work, ctx.work / f"rayserve-{wl.name}.log", port, "/predict", settings)


STARTERS = {
    "ours": start_ours,
    BASELINE: start_baseline,
    "torchserve": start_torchserve,
    "bare": start_bare,
    "litserve": start_litserve,
    "pytriton": start_pytriton,
    "mlserver": start_mlserver,
    "bentoml": start_bentoml,
    "rayserve": start_rayserve,
    **{kind: functools.partial(start_ours_kind, kind=kind) for kind in ("ours-mar", "ours-script")},
    **{kind: functools.partial(start_bare_kind, kind=kind) for kind in ("bare-mar", "bare-script")},
}


def _request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: Server, wl: Workload, timeout: float) -> None:
    """Poll until the server answers the workload's request with 200, then check the answer is right."""
    deadline, body, last = time.monotonic() + timeout, (server.body or wl.body).read_bytes(), "no answer"
    while True:
        if not server.alive():
            raise BenchError(f"{server.kind} exited before it was ready:\n{_tail(server.log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{server.kind} not ready after {timeout:.0f} s (last: {last}):\n{_tail(server.log)}")
        try:
            if server.ping:
                status, answer = _request(server.port, "GET", "/ping", timeout=5)
                if status != 200:
                    last = f"GET /ping {status}"
                    time.sleep(0.2)
                    continue
            status, answer = _request(server.port, "POST", server.path, body, timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
            continue
        if status == 200:
            break
        last = f"POST {server.path} {status} {answer[:200]!r}"
        time.sleep(0.2)
    if server.answer is not None:
        try:
            answer = server.answer(answer)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BenchError(
                f"{server.kind} answered something else than its protocol's outputs ({exc}): {answer[:300]!r}"
            ) from None
    check_answer(server.kind, answer, wl)


def check_answer(kind: str, answer: bytes, wl: Workload) -> None:
    try:
        got = json.loads(answer)["predictions"][0]
        ok = (
            got["index"] == wl.expected["index"]
            and got["label"] == wl.expected["label"]
            and len(got["probabilities"]) == len(wl.expected["probabilities"])
            and max(abs(a - b) for a, b in zip(got["probabilities"], wl.expected["probabilities"], strict=True)) <= 1e-4
        )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BenchError(f"{kind} answered something else than predictions ({exc}): {answer[:300]!r}") from None
    if not ok:
        raise BenchError(
            f"{kind} answered index {got.get('index')} label {got.get('label')!r} probabilities "
            f"{got.get('probabilities')}, expected {wl.expected}"
        )


def torchserve_settings(server: Server, wl: Workload) -> str:
    """What TorchServe says it registered (management API): proof that the batch size took."""
    try:
        status, answer = _request(server.management_port, "GET", f"/models/{server.model}", timeout=10)
        info = json.loads(answer)[0] if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, IndexError, KeyError) as exc:
        raise BenchError(f"torchserve management API GET /models/{server.model}: {exc}") from None
    if not isinstance(info, dict):
        raise BenchError(f"torchserve management API GET /models/{server.model}: {status} {answer[:200]!r}")
    workers = len(info.get("workers", []))
    if info.get("batchSize") != wl.batch or workers != 1:
        raise BenchError(
            f"torchserve registered batchSize {info.get('batchSize')} with {workers} workers, "
            f"expected {wl.batch} with 1: {answer[:500]!r}"
        )
    # TorchServe reads maxBatchDelay 0 as unset (100 ms); with batchSize 1 it never waits, so it is moot.
    return f"batch {info.get('batchSize')}, {info.get('maxBatchDelay') if wl.batch > 1 else 0} ms"


def pytriton_settings(server: Server, wl: Workload) -> str:
    """What Triton says it loaded (GET /v2/models/NAME/config): its batch size and queue delay."""
    try:
        status, answer = _request(server.port, "GET", f"/v2/models/{server.model}/config", timeout=10)
        config = json.loads(answer) if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"pytriton GET /v2/models/{server.model}/config: {exc}") from None
    if not isinstance(config, dict) or "dynamic_batching" not in config:
        raise BenchError(f"pytriton GET /v2/models/{server.model}/config: no dynamic batching: {answer[:300]!r}")
    size = config.get("max_batch_size")
    delay_ms = int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0)) / 1000
    if not wl.ours_defaults and (size != wl.batch or delay_ms != wl.delay_ms):
        raise BenchError(
            f"pytriton loaded max_batch_size {size}, max_queue_delay {delay_ms:g} ms, expected "
            f"{wl.batch} and {wl.delay_ms}: {answer[:300]!r}"
        )
    return f"{'defaults: ' if wl.ours_defaults else ''}batch{'<=' if wl.ours_defaults else ' '}{size}, {delay_ms:g} ms"


# ---------------------------------------------------------------------------------------------------------- load


@dataclass(slots=True)
class Result:
    model: str
    server: str
    settings: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mib: float | None = None
    others: float | None = None
    """Share of all CPUs other processes used during the measured run that is reported, 0..1."""
    attempts: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    round: int = 1
    """Which of the ``--rounds`` measured it: goals compare servers of one round, neighbours in time."""


def run_wrk(server: Server, wl: Workload, seconds: int, threads: int, work: Path) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t",
        str(min(threads, wl.connections)),
        "-c",
        str(wl.connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(SUPPORT / "wrk.lua"),
        f"http://127.0.0.1:{server.port}{server.path}",
    ]
    try:
        done = subprocess.run(
            cmd,
            env={**os.environ, "BENCH_BODY": str(server.body or wl.body)},
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
            cwd=work,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish a {seconds} s run within {seconds + 120} s") from None
    found = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, flags=re.M)
    if done.returncode != 0 or not found:
        raise BenchError(f"wrk exited {done.returncode} without a summary:\n{done.stdout}{done.stderr}")
    stats = json.loads(found.group(1))
    socket_errors = sum(stats[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    if stats["status_errors"] or "Non-2xx or 3xx responses" in done.stdout or socket_errors or not stats["requests"]:
        raise BenchError(
            f"{server.kind}: {stats['requests']} requests, {stats['status_errors']} non-2xx or 3xx "
            f"responses, socket errors connect {stats['connect_errors']} read {stats['read_errors']} "
            f"write {stats['write_errors']} timeout {stats['timeouts']}:\n{done.stdout.strip()}\n"
            f"{_tail(server.log)}"
        )
    return stats


def measure(ctx: Context, kind: str, wl: Workload, args: argparse.Namespace) -> Result:
    """Start, check, load and stop one server; a failure comes back as ``Result.error``."""
    result = Result(wl.name, kind, "")
    try:
        server = STARTERS[kind](ctx, wl)
    except BenchError as exc:
        result.error = str(exc)
        return result
    result.settings = server.settings
    try:
        wait_ready(server, wl, ctx.startup_timeout)
        if kind == "torchserve":
            result.settings = torchserve_settings(server, wl)
        if kind == "pytriton":
            result.settings = pytriton_settings(server, wl)
        with MemorySampler(server.sid) as sampler:
            if args.warmup > 0:
                run_wrk(server, wl, args.warmup, args.wrk_threads, ctx.work)
            pids = session_pids(server.sid)
            for attempt in range(1 + args.retries):  # keep the quietest measured run
                t0, busy0, server0 = time.perf_counter(), _busy_cpu_seconds(), _cpu_seconds(pids)
                self0, children0 = _self_cpu_seconds(), _children_cpu_seconds()
                stats = run_wrk(server, wl, args.duration, args.wrk_threads, ctx.work)
                wall = time.perf_counter() - t0
                mine = (
                    (_cpu_seconds(pids) - server0)
                    + (_self_cpu_seconds() - self0)
                    + (_children_cpu_seconds() - children0)
                )  # the server, this bench and wrk
                others = max(0.0, (_busy_cpu_seconds() - busy0 - mine) / (wall * (os.cpu_count() or 1)))
                if result.others is None or others < result.others:
                    result.others, result.attempts = others, attempt + 1
                    result.rps = stats["requests"] / (stats["duration_us"] / 1e6)
                    result.p50_ms, result.p99_ms = stats["p50_us"] / 1e3, stats["p99_us"] / 1e3
                if others <= QUIET:
                    break
                print(
                    f"          {wl.name} {kind}: other processes used {100 * others:.0f}% of the CPUs during "
                    f"measured run {attempt + 1}" + (", measuring again" if attempt < args.retries else ""),
                    flush=True,
                )
        result.rss_mib = sampler.peak / 2**20
        if not server.alive():
            raise BenchError(f"{kind} died during the run:\n{_tail(server.log)}")
    except BenchError as exc:
        result.error = str(exc)
    finally:
        stop(server)
    return result


def raw_forward(wl: Workload, threads: int, batch: int, seconds: float, retries: int) -> list[Result]:
    """samples/s of the saved program on batches of ``batch`` copies of the request, in this process: as
    exported (``torch.export.load``, NCHW: what TorchServe and the bare floor run), and the module our
    server runs, loaded and tuned by the server's own loader (serving/tuning.py), fed as its inference
    thread feeds it (``serving.runner.predict``)."""
    import numpy as np
    import torch

    from serving.loading import load_runner
    from serving.runner import predict
    from serving.store import ModelRef

    torch.set_num_threads(threads)
    module = torch.export.load(wl.model_dir / "model.pt2").module()
    instance = np.asarray(json.loads(wl.body.read_text())["instances"][0], dtype=np.float32)
    array = np.repeat(instance[None], batch, axis=0)
    exported = Result(wl.name, "raw forward", f"batch {batch}, NCHW as exported")
    _time_forward(lambda: module(torch.from_numpy(array)), batch, exported, seconds, retries)
    runner = load_runner(ModelRef(wl.name, "1", wl.model_dir), device="cpu", batch_size=batch)
    describe = runner.describe()
    settings = f"batch {batch}, as ours runs it ({describe['layout']}, {describe['fused_conv_relu']} conv+ReLU fused)"
    ours = _time_forward(
        lambda: predict(runner.artifact, array), batch, Result(wl.name, "raw forward", settings), seconds, retries
    )
    return [exported, ours]


def _time_forward(forward, batch: int, result: Result, seconds: float, retries: int) -> Result:
    import torch

    with torch.inference_mode():
        for _ in range(5):
            forward()
        for attempt in range(1 + retries):  # keep the quietest run, as for the servers
            start, busy0, self0, count = time.perf_counter(), _busy_cpu_seconds(), _self_cpu_seconds(), 0
            while time.perf_counter() - start < seconds:
                forward()
                count += 1
            elapsed = time.perf_counter() - start
            others = max(
                0.0, (_busy_cpu_seconds() - busy0 - (_self_cpu_seconds() - self0)) / (elapsed * (os.cpu_count() or 1))
            )
            if result.others is None or others < result.others:
                result.others, result.attempts, result.rps = others, attempt + 1, count * batch / elapsed
                result.extra["batch_ms"] = 1e3 * elapsed / count
            if others <= QUIET:
                break
    return result


# ----------------------------------------------------------------------------------------------------- installing


def _run_loud(cmd: list[str]) -> bool:
    print(f"install   {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=sys.stderr, env=env).returncode == 0


def _apt_install(package: str) -> bool:
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None or not shutil.which("apt-get"):
        return False
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    return _run_loud(install) or (_run_loud([*prefix, "apt-get", "update"]) and _run_loud(install))


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")


def ensure_tools(servers: list[str], install: bool) -> None:
    """wrk always; TorchServe, its archiver and Java when TorchServe is benchmarked. Installs what is missing."""
    if not shutil.which("wrk") and not (install and _apt_install("wrk") and shutil.which("wrk")):
        raise BenchError("wrk is not installed: apt-get install wrk (Debian/Ubuntu), then re-run")
    for name in (s for s in servers if s in PEERS):
        try:
            version = peers.ensure(name, install)
        except peers.PeerError as exc:
            raise BenchError(str(exc)) from None
        print(f"peer      {name} {peers.package_version(name)} in .venv-peers/{name}, torch {version}", flush=True)
    if not {"torchserve", "ours-mar", "bare-mar"} & set(servers):
        return
    if not all(importlib.util.find_spec(m) for m in ("ts", "model_archiver")):
        pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
        if not install or not _run_loud(pip):
            raise BenchError(f"TorchServe is not installed: {' '.join(pip)} (or leave it out: --servers ours,bare)")
        importlib.invalidate_caches()
    if (
        "torchserve" in servers
        and not _java()
        and not (install and _apt_install("openjdk-17-jre-headless") and _java())
    ):
        raise BenchError(
            "TorchServe needs Java 11+: apt-get install openjdk-17-jre-headless, or set JAVA_HOME "
            "(or leave TorchServe out: --servers ours,bare)"
        )


# -------------------------------------------------------------------------------------------------------- report


def _version(cmd: list[str], pattern: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        found = re.search(pattern, done.stdout + done.stderr)
        if found:
            return found.group(1)
    return "?"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: tuple[int, ...]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i in left else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row).rstrip() for row in (header, *rows))


EXIT_MISSED = 3
"""The exit status when a goal was missed (and --allow-miss was not given)."""


def report(results: list[Result]) -> tuple[str, list[str]]:
    """The two tables, and the names of the goals that were missed.

    With several rounds every goal is computed within each round (servers measured minutes apart are not
    compared: this machine's speed drifts by tens of percent), the worst round's value is the one judged
    ("in every round"), and a column gives the range over the rounds."""
    rounds = sorted({r.round for r in results}) or [1]
    several = len(rounds) > 1
    rows = []
    for r in results:
        first = (str(r.round),) if several else ()
        if r.error:
            rows.append((*first, r.model, r.server, r.settings, "FAILED", "-", "-", "-", "-"))
            continue
        rows.append(
            (
                *first,
                r.model,
                r.server,
                r.settings,
                _cell(r.rps, ".1f"),
                _cell(r.p50_ms, ".2f"),
                _cell(r.p99_ms, ".2f"),
                _cell(r.rss_mib, ".0f"),
                _cell(None if r.others is None else 100 * r.others, ".0f"),
            )
        )
    noisy = [r for r in results if not r.error and r.others is not None and r.others > QUIET]
    header = ("model", "server", "settings", "requests/s", "p50 ms", "p99 ms", "peak RSS MiB", "others %")
    measured = _table((("round",) if several else ()) + header, rows, left=(0, 1, 2, 3) if several else (0, 1, 2))
    per_round = [_goals([r for r in results if r.round == n]) for n in rounds]
    goals = []
    for i in range(len(per_round[0])):
        judged = [g[i] for g in per_round]
        known = [g for g in judged if g[1] is not None]
        spread = f"{min(g[1] for g in known):.3f}-{max(g[1] for g in known):.3f}" if len(known) > 1 else ""
        goals.append((*_worst(judged), spread))
    if several:
        goal_rows = [
            (name, _cell(value, ".3f"), spread or "-", target, "n/a" if ok is None else ("PASS" if ok else "MISS"))
            for name, value, target, ok, spread in goals
        ]
        goal_table = _table(
            ("goal", "worst round", f"range over {len(rounds)} rounds", "target", "result"), goal_rows, left=(0, 3, 4)
        )
    else:
        goal_rows = [
            (name, _cell(value, ".3f"), target, "n/a" if ok is None else ("PASS" if ok else "MISS"))
            for name, value, target, ok, _ in goals
        ]
        goal_table = _table(("goal", "value", "target", "result"), goal_rows, left=(0, 2, 3))
    text = f"{measured}\n\n{goal_table}"
    if any(r.server == BASELINE for r in results):
        text += f"\n\n{baseline_table(results)}"
    if noisy:
        text += (
            f"\n\nwarning: other processes used more than {100 * QUIET:.0f}% of the CPUs during "
            f"{', '.join(f'{r.model} {r.server}' for r in noisy)} (column 'others %'): those figures measure "
            "contention as much as the server; re-run on an idle machine"
        )
    return text, [name for name, _, _, ok, _ in goals if ok is False]


def baseline_table(results: list[Result]) -> str:
    """ours against ours@before, per model and round (measured one right after the other): after/before."""

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None or b == 0 else f"{a / b:.3f}"

    rows = []
    for n in sorted({r.round for r in results}):
        for model in MODELS:
            pair = [
                next((r for r in results if (r.round, r.model, r.server) == (n, model, s) and not r.error), None)
                for s in ("ours", BASELINE)
            ]
            after, before = pair
            if after is None or before is None:
                continue
            rows.append(
                (
                    str(n),
                    model,
                    ratio(after.rps, before.rps),
                    ratio(after.p50_ms, before.p50_ms),
                    ratio(after.p99_ms, before.p99_ms),
                    ratio(after.rss_mib, before.rss_mib),
                )
            )
    header = ("round", "model", "requests/s after/before", "p50 after/before", "p99", "peak RSS")
    return _table(header, rows, left=(0, 1)) if rows else f"no round measured both ours and {BASELINE}"


def _worst(judged: list[tuple[str, float | None, str, bool | None]]) -> tuple[str, float | None, str, bool | None]:
    """Of one goal's values over the rounds, the one judged: a failing round if any, else the one closest to
    failing (the largest for an upper bound such as ``< 1``, the smallest for a lower bound)."""
    known = [g for g in judged if g[1] is not None]
    if not known:
        return judged[0]
    pool = [g for g in known if g[3] is False] or known
    upper = pool[0][2].startswith("<")
    return (max if upper else min)(pool, key=lambda g: g[1])


def _goals(results: list[Result]) -> list[tuple[str, float | None, str, bool | None]]:
    """(name, value, target, passed) of every goal over one round's results; None where not measured."""

    def get(model: str, server: str) -> Result | None:
        """The row; of several (the raw forward's two layouts), the fastest: the stricter ratio."""
        found = [r for r in results if r.model == model and r.server == server and not r.error]
        return max(found, key=lambda r: r.rps or 0) if found else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    goals: list[tuple[str, float | None, str, bool | None]] = []
    for model in MODELS:
        ours, ts, bare, raw = (get(model, s) for s in ("ours", "torchserve", "bare", "raw forward"))
        if model == "mlp":
            value = ratio(ours and ours.rps, bare and bare.rps)
            goals.append(
                (
                    "mlp requests/s ours/bare",
                    value,
                    f">= {GOAL_MLP_VS_BARE}",
                    None if value is None else value >= GOAL_MLP_VS_BARE,
                )
            )
        if model == "cnn":
            value = ratio(ours and ours.rps, ts and ts.rps)
            goals.append(
                (
                    "cnn requests/s ours/torchserve",
                    value,
                    f">= {GOAL_CNN_VS_TORCHSERVE:g}",
                    None if value is None else value >= GOAL_CNN_VS_TORCHSERVE,
                )
            )
            value = ratio(ours and ours.rps, raw and raw.rps)
            goals.append(
                (
                    "cnn ours requests/s / raw forward samples/s",
                    value,
                    f">= {GOAL_CNN_VS_RAW}",
                    None if value is None else value >= GOAL_CNN_VS_RAW,
                )
            )
    for model in MODELS:
        ours, ts = get(model, "ours"), get(model, "torchserve")
        value = ratio(ours and ours.p99_ms, ts and ts.p99_ms)
        goals.append((f"{model} p99 ours/torchserve", value, "< 1", None if value is None else value < 1))
    for model in MODELS:
        ours, ts = get(model, "ours"), get(model, "torchserve")
        value = ratio(ours and ours.rss_mib, ts and ts.rss_mib)
        goals.append(
            (
                f"{model} peak RSS ours/torchserve",
                value,
                f"<= {GOAL_MEMORY}",
                None if value is None else value <= GOAL_MEMORY,
            )
        )
    for kind in ("mar", "script"):  # user code: ours against a bare endpoint calling it the same way
        ours, bare = get("mlp", f"ours-{kind}"), get("mlp", f"bare-{kind}")
        value = ratio(ours and ours.rps, bare and bare.rps)
        goals.append(
            (
                f"mlp requests/s ours-{kind}/bare-{kind}",
                value,
                f">= {GOAL_KIND_VS_BARE}",
                None if value is None else value >= GOAL_KIND_VS_BARE,
            )
        )
        value = ratio(ours and ours.p99_ms, bare and bare.p99_ms)
        goals.append((f"mlp p99 ours-{kind}/bare-{kind}", value, "<= 1", None if value is None else value <= 1))
    for model in MODELS:  # today's servers: ours against the best (fastest, lowest p99, leanest) peer that ran
        ours = get(model, "ours")
        ran = [r for r in (get(model, s) for s in PEERS) if r is not None]

        def vs(pick, key, ran=ran):
            best = pick(ran, key=key) if ran else None
            return best, f" (vs {best.server})" if best else ""

        best, name = vs(max, lambda r: r.rps or 0)
        goal = GOAL_MLP_VS_PEER if model == "mlp" else GOAL_CNN_VS_PEER
        value = ratio(ours and ours.rps, best and best.rps)
        goals.append(
            (
                f"{model} requests/s ours/best peer",
                value,
                f">= {goal:g}{name}",
                None if value is None else value >= goal,
            )
        )
        best, name = vs(min, lambda r: r.p99_ms if r.p99_ms is not None else math.inf)
        value = ratio(ours and ours.p99_ms, best and best.p99_ms)
        goals.append((f"{model} p99 ours/lowest peer", value, f"< 1{name}", None if value is None else value < 1))
        best, name = vs(min, lambda r: r.rss_mib if r.rss_mib is not None else math.inf)
        value = ratio(ours and ours.rss_mib, best and best.rss_mib)
        goals.append(
            (
                f"{model} peak RSS ours/leanest peer",
                value,
                f"<= {GOAL_MEMORY_VS_PEER}{name}",
                None if value is None else value <= GOAL_MEMORY_VS_PEER,
            )
        )
    return goals


# ---------------------------------------------------------------------------------------------------------- main


def _csv(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: pick from {', '.join(choices)} (comma-separated)")
        return [c for c in choices if c in items]

    return parse


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", type=_csv(MODELS), default=list(MODELS), help="mlp,cnn (default both)")
    parser.add_argument(
        "--servers",
        type=_csv(SERVERS),
        default=list(SERVERS),
        help=f"{','.join(SERVERS)} (default all; the -mar and -script pairs run the mlp only)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        help="whole seconds of each measured wrk run (default 10; wrk takes whole seconds)",
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="whole seconds of the wrk run before it, dropped (default 5; 0: none)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every server and the raw forward (default torch.get_num_threads())",
    )
    parser.add_argument("--connections-mlp", type=int, default=16, help="wrk connections for the mlp (default 16)")
    parser.add_argument("--connections-cnn", type=int, default=32, help="wrk connections for the cnn (default 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="cnn: ours and TorchServe batch size (default 16)")
    parser.add_argument(
        "--batch-delay-ms", type=int, default=10, help="cnn: ours and TorchServe max batch delay in ms (default 10)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measured runs to add when other processes used more than 10%% of the CPUs during one; "
        "the quietest is reported (default 2)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1: the server keeps the cores)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="times every server is measured, one round after the other; each goal is judged in "
        "every round, between servers measured minutes apart at most (default 2)",
    )
    parser.add_argument(
        "--raw-seconds", type=float, default=None, help="seconds of the raw forward (default --duration)"
    )
    parser.add_argument("--ours-args", default="", help="extra flags for our server, e.g. --ours-args=--no-access-log")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help=f"another checkout (e.g. a worktree of the commit before a change): its server also runs, as "
        f"'{BASELINE}', right after ours with the same flags, and a table gives the after/before ratios",
    )
    parser.add_argument(
        "--torchserve-logging",
        choices=("quiet", "default"),
        default="quiet",
        help="quiet (default): an access log and warnings (serve_support/log4j2-quiet.xml); "
        "default: TorchServe's own log4j2.xml (DEBUG lines and metrics per request)",
    )
    parser.add_argument("--startup-timeout", type=float, default=180, help="seconds a server may take to answer")
    parser.add_argument("--no-install", action="store_true", help="stop instead of installing wrk or TorchServe")
    parser.add_argument(
        "--allow-miss",
        action="store_true",
        help=f"exit 0 when a goal is missed (default: exit {EXIT_MISSED}, so scripts see it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (artifacts, .mar, logs) and print it")
    args = parser.parse_args(argv)
    if min(args.threads or 1, args.connections_mlp, args.connections_cnn, args.batch_size, args.wrk_threads) < 1:
        parser.error("--threads, --connections-*, --batch-size and --wrk-threads must be >= 1")
    if args.retries < 0 or args.rounds < 1:
        parser.error("--retries must be >= 0 and --rounds >= 1")
    if args.duration < 1 or args.warmup < 0 or args.batch_delay_ms < 0:
        parser.error("--duration must be >= 1, --warmup and --batch-delay-ms >= 0")
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "serving" / "__main__.py").is_file():
            parser.error(f"--baseline-tree {args.baseline_tree} has no serving/__main__.py: give a checkout's root")
        if "ours" not in args.servers:
            parser.error("--baseline-tree compares with ours: keep ours in --servers")
        args.baseline_tree = args.baseline_tree.resolve()
    return args


def run_order(servers: list[str], model: str, baseline: bool) -> list[str]:
    """Who runs, in order, for one model: the raw forward (cnn) and BASELINE (with --baseline-tree) right after
    ours, so that ratios to ours compare runs minutes apart at most."""
    order = [s for s in servers if model == "mlp" or s not in KIND_SERVERS]
    if "ours" in order:
        at = order.index("ours") + 1
        order[at:at] = [*(["raw forward"] if model == "cnn" else []), *([BASELINE] if baseline else [])]
    elif model == "cnn":
        order.append("raw forward")
    return order


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background with it ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)  # so the finally below stops the servers
    work = Path(tempfile.mkdtemp(prefix="deepcloud-bench-serve-"))
    results: list[Result] = []
    missed: list[str] = []
    try:
        ensure_tools(args.servers, install=not args.no_install)
        # torch keeps a compile cache in $TMPDIR/torchinductor_$USER; keep this run's (and its servers') in the work dir
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "torchinductor"))
        import torch

        threads = args.threads or torch.get_num_threads()
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
            "PYTHONUNBUFFERED": "1",
        }
        ctx = Context(
            work,
            work / "store",
            threads,
            env,
            ours_cli(),
            args.ours_args.split(),
            args.startup_timeout,
            args.torchserve_logging,
            args.baseline_tree,
            ours_cli(args.baseline_tree) if args.baseline_tree else "store",
        )
        print(
            f"machine   {os.cpu_count()} cores ({cpu_name()}), torch {torch.__version__}, python "
            f"{platform.python_version()}, {threads} torch threads for every server and the raw forward"
        )
        tools = (
            f"wrk {_version(['wrk', '-v'], r'wrk (?:debian/)?([0-9][^ ]*)')} (-t {args.wrk_threads}), starlette "
            f"{_package_version('starlette')}, uvicorn {_package_version('uvicorn')}"
        )
        if "torchserve" in args.servers:
            java = _version([_java() or "java", "-version"], r'version "([^"]+)"')
            tools += f", torchserve {_package_version('torchserve')}, java {java}"
        print(f"tools     {tools}")
        if ctx.baseline is not None:
            print(f"baseline  {BASELINE}: our server from {ctx.baseline}, right after ours, with the same flags")
        if ctx.ours_cli != "store":
            print(
                "warning: this server has no --model-store/--max-batch-size yet: ours runs with --model-dir on "
                "/invocations, without batching",
                file=sys.stderr,
            )
        workloads = []
        for name in args.models:
            cnn = name == "cnn"
            # mlp: ours at its defaults (batch what queued up, wait for nothing), TorchServe at its own (batch 1)
            wl = make_workload(
                name,
                ctx.store,
                args.connections_cnn if cnn else args.connections_mlp,
                args.batch_size if cnn else 1,
                args.batch_delay_ms if cnn else 0,
                ours_defaults=not cnn,
            )
            workloads.append(wl)
            print(
                f"workload  {name}: input {wl.manifest['input']['shape']}, {wl.body.stat().st_size} B body, "
                f"{wl.connections} connections, batch {wl.batch}, delay {wl.delay_ms} ms"
            )
        print(
            f"runs      one server at a time: ready + answer checked, {args.warmup:g} s warm-up, "
            f"{args.duration:g} s measured",
            flush=True,
        )
        for round_, wl in ((n, wl) for n in range(1, args.rounds + 1) for wl in workloads):
            if wl is workloads[0] and args.rounds > 1:
                print(f"round     {round_} of {args.rounds}", flush=True)
            # The raw forward and ours@before right after our server: this machine's speed drifts by several
            # percent over minutes, and the ratios to ours should not measure the drift.
            for kind in run_order(args.servers, wl.name, ctx.baseline is not None):
                if kind == "raw forward":
                    for raw in raw_forward(
                        wl, threads, args.batch_size, args.raw_seconds or args.duration, args.retries
                    ):
                        print(
                            f"run       cnn  raw forward {raw.rps:8.1f} samples/s ({raw.settings}, "
                            f"{raw.extra['batch_ms']:.2f} ms per batch)  others {100 * raw.others:.0f}%"
                            f"{'' if raw.others <= QUIET else '  (not quiet)'}",
                            flush=True,
                        )
                        raw.round = round_
                        results.append(raw)
                    continue
                result = measure(ctx, kind, wl, args)
                result.round = round_
                if result.error:
                    print(f"error: {wl.name} {kind}: {result.error}", file=sys.stderr, flush=True)
                else:
                    quiet = "" if (result.others or 0) <= QUIET else "  (not quiet)"
                    print(
                        f"run       {wl.name:<4} {kind:<11} {result.rps:8.1f} requests/s  p50 {result.p50_ms:7.2f} "
                        f"ms  p99 {result.p99_ms:7.2f} ms  {result.rss_mib:5.0f} MiB  others "
                        f"{100 * (result.others or 0):.0f}%{quiet}",
                        flush=True,
                    )
                results.append(result)
        print()
        text, missed = report(results)
        print(text)
        if missed and not args.allow_miss:
            print(
                f"\nmissed {len(missed)} goal(s): {', '.join(missed)} (exit {EXIT_MISSED}; --allow-miss exits 0)",
                file=sys.stderr,
            )
        if args.keep:
            print(f"\nwork dir  {work}")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopping the servers", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for server in list(RUNNING):
            stop(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        for folder in SCRATCH:
            shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return exit_status(results, missed, args.allow_miss)


def exit_status(results: list[Result], missed: list[str], allow_miss: bool) -> int:
    """1 when a run failed, else EXIT_MISSED when a goal was missed (0 with --allow-miss), else 0."""
    if any(r.error for r in results):
        return 1
    return EXIT_MISSED if missed and not allow_miss else 0


if __name__ == "__main__":
    sys.exit(main())
