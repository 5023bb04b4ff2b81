"""`make bench-train`: the trainer against a bare hand-written PyTorch loop, same model, data and threads.

::

    python -m bench.train                      # 30 epochs (the trainer's default), median of 3 quiet rounds
    python -m bench.train --epochs 5 --repeats 1 --threads 1
    python -m bench.train --data .deepcloud/data/digits --keep   # keep the job dirs and logs
    python -m bench.train --baseline-tree /work/before            # also the trainer of another checkout

Each round runs two processes one after the other (which goes first alternates), both with
``OMP_NUM_THREADS=--threads``:

- **trainer**: ``python -m trainer train`` in a fresh SageMaker job layout (as ``tests/conftest.py``
  ``make_job`` builds it) with ``epochs``, ``seed``, ``device`` and ``deterministic`` set and every
  other hyperparameter at its default, so checkpoints follow the automatic cadence
  (``checkpoint_every_steps=0``). Its figures come from the ``done`` line of ``output/data/metrics.jsonl``:
  ``step_seconds`` (optimizer steps only: evaluation and checkpoint writes excluded) and
  ``checkpoint_seconds``.
- **bare**: this module re-invoked with ``--bare``: the PNGs read with PIL, the same model from
  ``trainer.model.build.build_model``, AdamW with the same parameter groups, the same warmup + cosine
  ``LambdaLR``, a plain ``DataLoader(shuffle=True)`` and nothing else. Steps are timed the same way
  (per epoch, from creating the loader's iterator to the end of its last step). After the loop it ships
  the model the way any script must for it to be served: ``torch.export`` with a dynamic batch, save,
  reload, evaluate the reload on validation and test.

With ``--baseline-tree DIR`` each round runs a third process, **before**: ``python -m trainer train`` of the
checkout at ``DIR`` (its own process, cwd and ``PYTHONPATH`` at ``DIR``, this interpreter), on the same job
layout and hyperparameters. The rounds rotate which of the three goes first, and a second table compares
this tree's trainer (*after*) with it: samples/s, checkpoint overhead and memory, as after/before ratios,
plus each side's trainer/bare ratio. Side by side under the same load, the ratios compare a refactor fairly
even where the absolute figures are noisy.

samples/s = training samples x epochs / step seconds. Peak resident memory is shown twice:

- *training loop*: ``VmHWM`` when the loop ends (the trainer's polled until its ``done`` line appears,
  the bare loop's read by itself), so the loops' own costs compare alone;
- *whole process*: each child's ``ru_maxrss`` from ``os.wait4``, which adds the export and evaluation
  both do, and the trainer's manifest and PNG report (matplotlib).

On a shared machine a run that competes for the cores with another process can be several times slower
(OpenMP threads wait for each other), which says nothing about the trainer. So each run also measures
the share of all CPUs that other processes used meanwhile (``/proc/stat`` minus the child's own CPU
time); rounds in which every run saw at most 10% are *quiet*. The bench runs rounds until it has
``--repeats`` quiet ones (or ``--max-runs`` rounds) and reports medians over the quiet rounds (over all
rounds, with a warning, when none was quiet). The goals (ratio >= 0.95, checkpoint
overhead <= 2%, memory <= 1.1x bare) are informational: the exit status is 0 unless a process failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHANNELS = ("train", "validation", "test")
GOAL_RATIO = 0.95
GOAL_CHECKPOINT = 0.02
GOAL_MEMORY = 1.1
POLL_SECONDS = 0.05
QUIET = 0.10
"""A run is quiet when other processes used at most this share of all CPUs while it ran."""
# Resolved trainer settings the bare loop copies (read from TrainConfig so both sides agree on defaults).
_BARE_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_fraction",
    "label_smoothing",
    "dropout",
    "width",
    "model",
    "seed",
    "deterministic",
    "device",
)


# --------------------------------------------------------------------------------------------------- the bare loop


def _load_demo_channel(channel: Path) -> tuple[Any, Any, list[str]]:
    """(images float32 N,C,H,W in 0..255, int64 targets, classes) of a demo-format channel, read with PIL."""
    import numpy as np
    import torch
    from PIL import Image

    with (channel / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    listed = channel / "classes.txt"
    classes = listed.read_text().split() if listed.exists() else sorted({r["label"] for r in rows})
    index = {name: i for i, name in enumerate(classes)}
    arrays = []
    for row in rows:
        with Image.open(channel / row["file"]) as image:
            array = np.asarray(image, dtype=np.float32)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    images = torch.from_numpy(np.stack(arrays))
    targets = torch.tensor([index[r["label"]] for r in rows], dtype=torch.int64)
    return images, targets, classes


def _build_model(cfg: dict[str, Any], images, num_classes: int):
    """``trainer.model.build.build_model`` with the arguments trainer/__main__.py gives it, whatever its signature."""
    import inspect

    from trainer.model.build import build_model

    pixels = images / 255.0
    kwargs: dict[str, Any] = {
        "in_channels": images.shape[1],
        "num_classes": num_classes,
        "width": cfg["width"],
        "dropout": cfg["dropout"],
        "mean": pixels.mean(dim=(0, 2, 3)).tolist(),
        "std": pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
    }
    if "image_size" in inspect.signature(build_model).parameters:
        kwargs["image_size"] = tuple(images.shape[2:])
    return build_model(cfg["model"], **kwargs)


def _warmup_cosine(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return factor


def bare(data: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """The hand-written loop. Returns what the parent needs; only the training steps are timed."""
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    images, targets, classes = _load_demo_channel(data / "train")
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
    device = torch.device("cuda" if cfg["device"] == "cuda" else "cpu")
    model = _build_model(cfg, images, len(classes)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg["lr"])
    loader = DataLoader(TensorDataset(images, targets), batch_size=cfg["batch_size"], shuffle=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(cfg["epochs"] * len(loader), cfg["warmup_fraction"])
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])

    model.train()
    seconds, steps, samples = 0.0, 0, 0
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            steps += 1
            samples += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    loop_hwm = _vm_hwm_kib(os.getpid())

    # What any script that ships a servable model does next, written out by hand: export with a dynamic
    # batch, save, reload, evaluate the reload. The trainer does this too (plus manifest and PNG report),
    # so the whole-process peaks compare the same work; the loop peak above compares the loops alone.
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (images[:2],), dynamic_shapes=({0: batch},))
    with tempfile.TemporaryDirectory() as tmp:
        torch.export.save(program, Path(tmp) / "model.pt2")
        shipped = torch.export.load(Path(tmp) / "model.pt2").module()
    accuracy = {}
    with torch.no_grad():
        for name in ("validation", "test"):
            if (data / name).is_dir():
                x, y, _ = _load_demo_channel(data / name)
                accuracy[name] = sum(
                    (shipped(x[i : i + 512]).argmax(1) == y[i : i + 512]).sum().item() for i in range(0, len(y), 512)
                ) / len(y)
    return {
        "steps": steps,
        "samples": samples,
        "step_seconds": seconds,
        "train_samples": len(targets),
        "threads": torch.get_num_threads(),
        "final_loss": loss.item(),
        "loop_hwm_kib": loop_hwm,
        "accuracy": accuracy,
    }


# ------------------------------------------------------------------------------------------------ child processes


@dataclass(slots=True)
class Child:
    returncode: int
    maxrss_kib: int
    """ru_maxrss from wait4: the whole process's peak resident set."""
    loop_hwm_kib: int | None
    """VmHWM last seen before ``done_marker`` existed (the trainer: peak through the training loop)."""
    wall: float
    others: float | None
    """Share of all CPUs that other processes (and other VMs: steal) used while it ran, 0..1."""
    log: Path


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; steal counts as busy: another VM ran)."""
    try:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fh.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _done_written(metrics: Path) -> bool:
    try:
        return '"type": "done"' in metrics.read_text()
    except OSError:
        return False


def run_child(
    cmd: list[str], env: dict[str, str], log: Path, timeout: float, done_marker: Path | None = None, cwd: Path = REPO
) -> Child:
    """Run ``cmd`` in ``cwd`` to its end, output to ``log``; peak RSS from wait4 (this child only, not the bench)."""
    started, busy0, self0 = time.perf_counter(), _busy_cpu_seconds(), _self_cpu_seconds()
    with log.open("wb") as out:
        # A session of its own: an interrupted bench kills it with everything it started (DataLoader workers).
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finished = threading.Event()
    hwm: list[int | None] = [None]

    def poll() -> None:
        while not finished.wait(POLL_SECONDS):
            value = _vm_hwm_kib(proc.pid)  # read before the check: a value seen while "done" was absent
            if done_marker is not None and _done_written(done_marker):
                return
            if value is not None:
                hwm[0] = value

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted (SIGTERM, Ctrl-C): the run goes with the bench
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        killer.cancel()
        finished.set()
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    wall, busy1 = time.perf_counter() - started, _busy_cpu_seconds()
    others = None
    if busy0 is not None and busy1 is not None:
        mine = usage.ru_utime + usage.ru_stime + _self_cpu_seconds() - self0
        others = max(0.0, (busy1 - busy0 - mine) / (wall * (os.cpu_count() or 1)))
    return Child(proc.returncode, usage.ru_maxrss, hwm[0], wall, others, log)


def make_job(base: Path, dataset: Path, hyperparameters: dict[str, str]) -> Path:
    """A SageMaker training layout under ``base`` with copies of the channels (as tests/conftest.py builds it)."""
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for channel in CHANNELS:
        shutil.copytree(dataset / channel, base / "input" / "data" / channel)
    return base


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_trainer(
    work: Path,
    n: int,
    dataset: Path,
    hp: dict[str, str],
    env: dict[str, str],
    timeout: float,
    tree: Path = REPO,
    name: str = "trainer",
) -> dict[str, Any]:
    """One run of ``python -m trainer train`` from the checkout at ``tree`` (cwd and PYTHONPATH there)."""
    base = make_job(work / f"job-{name}-{n}", dataset, hp)
    metrics = base / "output" / "data" / "metrics.jsonl"
    child = run_child(
        [sys.executable, "-m", "trainer", "train"],
        {**env, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": _pythonpath(tree)},
        work / f"{name}-{n}.log",
        timeout,
        done_marker=metrics,
        cwd=tree,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{name} run {n} exited {child.returncode}:\n{_tail(child.log)}")
    done = [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("type") == "done"]
    if not done or "step_seconds" not in done[-1]:
        raise RuntimeError(f"{metrics} has no 'done' line with step_seconds: the trainer no longer reports it")
    found = re.search(r"data train=(\d+)", child.log.read_text(errors="replace"))
    return {
        **done[-1],
        "train_samples": int(found.group(1)) if found else None,
        "maxrss_kib": child.maxrss_kib,
        "loop_hwm_kib": child.loop_hwm_kib,
        "wall": child.wall,
        "others": child.others,
    }


def _pythonpath(tree: Path) -> str:
    return os.pathsep.join(filter(None, (str(tree), os.environ.get("PYTHONPATH"))))


def run_bare(
    work: Path, n: int, dataset: Path, cfg: dict[str, Any], env: dict[str, str], timeout: float
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.train", "--bare", "--data", str(dataset), "--config", json.dumps(cfg)]
    child = run_child(cmd, env, work / f"bare-{n}.log", timeout)
    if child.returncode != 0:
        raise RuntimeError(f"bare loop run {n} exited {child.returncode}:\n{_tail(child.log)}")
    lines = [line for line in child.log.read_text().splitlines() if line.startswith("{")]
    return {**json.loads(lines[-1]), "maxrss_kib": child.maxrss_kib, "wall": child.wall, "others": child.others}


# ---------------------------------------------------------------------------------------------------------- report


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def _cell(value: float | int | str | None, fmt: str = "") -> str:
    if value is None:
        return "-"
    return format(value, fmt) if fmt and not isinstance(value, str) else str(value)


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def _quiet(*runs: dict) -> bool:
    """Every run of a round saw at most QUIET of the CPUs used by other processes (unknown counts as quiet)."""
    return all(r["others"] is None or r["others"] <= QUIET for r in runs)


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else "PASS" if ok else "MISS"


def report(trainer_runs: list[dict], bare_runs: list[dict], train_samples: int, epochs: int) -> str:
    med = statistics.median
    t_rate = med(train_samples * epochs / r["step_seconds"] for r in trainer_runs)
    b_rate = med(r["samples"] / r["step_seconds"] for r in bare_runs)
    overhead = med(r["checkpoint_seconds"] / r["step_seconds"] for r in trainer_runs)
    ckpts = med(r["checkpoints"] for r in trainer_runs)
    ckpt_s = med(r["checkpoint_seconds"] for r in trainer_runs)
    t_rss, b_rss = med(_mib(r["maxrss_kib"]) for r in trainer_runs), med(_mib(r["maxrss_kib"]) for r in bare_runs)
    loop = [_mib(r["loop_hwm_kib"]) for r in trainer_runs if r["loop_hwm_kib"]]
    t_loop = med(loop) if loop else None
    b_loop = med(_mib(r["loop_hwm_kib"]) for r in bare_runs)
    rows = [
        (
            "samples/s",
            _cell(t_rate, ".0f"),
            _cell(b_rate, ".0f"),
            _cell(t_rate / b_rate, ".3f"),
            f">= {GOAL_RATIO}",
            _verdict(t_rate / b_rate >= GOAL_RATIO),
        ),
        (
            "checkpoint overhead %",
            _cell(100 * overhead, ".2f"),
            "-",
            "-",
            f"<= {100 * GOAL_CHECKPOINT:.0f}",
            _verdict(overhead <= GOAL_CHECKPOINT),
        ),
        ("checkpoints written", _cell(ckpts, "g"), "-", "-", f"({ckpt_s:.3f} s in all)", "-"),
        (
            "peak RSS MiB, training loop",
            _cell(t_loop, ".0f"),
            _cell(b_loop, ".0f"),
            _cell(None if t_loop is None else t_loop / b_loop, ".3f"),
            f"<= {GOAL_MEMORY}",
            _verdict(None if t_loop is None else t_loop / b_loop <= GOAL_MEMORY),
        ),
        (
            "peak RSS MiB, whole process",
            _cell(t_rss, ".0f"),
            _cell(b_rss, ".0f"),
            _cell(t_rss / b_rss, ".3f"),
            f"<= {GOAL_MEMORY}",
            _verdict(t_rss / b_rss <= GOAL_MEMORY),
        ),
    ]
    header = ("metric (median)", "trainer", "bare", "trainer/bare", "goal", "result")
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, 4, 5) else f"{{:>{w}}}" for i, w in enumerate(widths))
    paired = med(
        train_samples * epochs / t["step_seconds"] / (b["samples"] / b["step_seconds"])
        for t, b in zip(trainer_runs, bare_runs, strict=True)
    )
    table = "\n".join(fmt.format(*row).rstrip() for row in (header, *rows))
    return f"{table}\npaired    median of the per-run samples/s ratios (adjacent runs, same load): {paired:.3f}"


def compare(after_runs: list[dict], before_runs: list[dict], bare_runs: list[dict], samples: int) -> str:
    """The ``--baseline-tree`` table: this tree's trainer (after) against the baseline tree's (before), with
    each side's trainer/bare ratio; ``samples`` is training samples x epochs. Runs are aligned by round."""
    med = statistics.median

    def rate(run: dict) -> float:
        return samples / run["step_seconds"]

    def figures(runs: list[dict]) -> dict[str, float | None]:
        loop = [_mib(r["loop_hwm_kib"]) for r in runs if r["loop_hwm_kib"]]
        return {
            "samples/s": med(rate(r) for r in runs),
            "samples/s ratio to bare": med(
                rate(r) / (b["samples"] / b["step_seconds"]) for r, b in zip(runs, bare_runs, strict=True)
            ),
            "checkpoint overhead %": med(100 * r["checkpoint_seconds"] / r["step_seconds"] for r in runs),
            "peak RSS MiB, training loop": med(loop) if loop else None,
            "peak RSS MiB, whole process": med(_mib(r["maxrss_kib"]) for r in runs),
        }

    after, before = figures(after_runs), figures(before_runs)
    formats = {"samples/s ratio to bare": ".3f", "checkpoint overhead %": ".2f"}
    rows = []
    for name, a in after.items():
        b, fmt = before[name], formats.get(name, ".0f")
        ratio = None if a is None or not b else a / b
        rows.append((name, _cell(a, fmt), _cell(b, fmt), _cell(ratio, ".3f")))
    header = ("metric (median)", "after", "before", "after/before")
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    paired = med(rate(a) / rate(b) for a, b in zip(after_runs, before_runs, strict=True))
    table = "\n".join(fmt.format(*row).rstrip() for row in (header, *rows))
    line = f"paired    median of the per-round after/before samples/s ratios (same round, same load): {paired:.3f}"
    return f"{table}\n{line}"


# ------------------------------------------------------------------------------------------------------------ main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench = parser.add_argument_group("benchmark")
    bench.add_argument(
        "--epochs", type=int, default=None, help="epochs per run, both sides (default: the trainer's default, 30)"
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="quiet rounds (trainer, bare and with --baseline-tree before, in turn) to collect; medians over those",
    )
    bench.add_argument(
        "--max-runs",
        type=int,
        default=None,
        help="stop after this many rounds even if fewer were quiet (default: 3 x --repeats)",
    )
    bench.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for both children (default: torch.get_num_threads() here)",
    )
    bench.add_argument(
        "--deterministic",
        choices=("true", "false"),
        default="true",
        help="trainer hyperparameter 'deterministic', mirrored by the bare loop (default: true, the trainer's default)",
    )
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="both sides (default: cpu)")
    bench.add_argument(
        "--data",
        type=Path,
        default=None,
        help="digits dataset dir (default: .deepcloud/data/digits when complete, else a fresh "
        "copy written into the work dir)",
    )
    bench.add_argument("--keep", action="store_true", help="keep the work dir (job dirs and logs) and print it")
    bench.add_argument("--timeout", type=float, default=1800, help="seconds before a child is killed")
    bench.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run the trainer of the checkout at DIR (e.g. a worktree of the commit before a change) in each "
        "round, and print after/before ratios (default: off)",
    )
    internal = parser.add_argument_group("internal (the bare loop's own process)")
    internal.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.repeats, args.epochs or 1, args.threads or 1, args.max_runs or 1) < 1:
        parser.error("--repeats, --max-runs, --epochs and --threads must be >= 1")
    if args.baseline_tree is not None:
        args.baseline_tree = args.baseline_tree.resolve()
        if not (args.baseline_tree / "trainer" / "__main__.py").is_file():
            parser.error(f"--baseline-tree {args.baseline_tree} has no trainer/__main__.py")
    return args


def _dataset(args: argparse.Namespace, work: Path) -> Path:
    from ops.data import COMPLETE, prepare_digits
    from ops.paths import Paths

    if args.data is not None:
        return args.data.resolve()
    kept = Paths.from_environ().dataset
    if (kept / COMPLETE).exists():
        return kept
    prepare_digits(work / "digits")
    return work / "digits"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.bare:
        print(json.dumps(bare(args.data, json.loads(args.config))), flush=True)
        return 0

    import torch

    from trainer.config import TrainConfig

    threads = args.threads or torch.get_num_threads()
    max_runs = args.max_runs or 3 * args.repeats
    hp = {"seed": "0", "device": args.device, "deterministic": args.deterministic}
    if args.epochs is not None:
        hp["epochs"] = str(args.epochs)
    cfg = TrainConfig.from_hyperparameters(hp).to_dict()
    trainer_hp = {k: str(v) for k, v in hp.items()}
    bare_cfg = {k: cfg[k] for k in _BARE_FIELDS}
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    }
    for sig in (signal.SIGTERM, signal.SIGHUP):  # `timeout` and a closed terminal: the finally below still cleans up
        signal.signal(sig, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="deepcloud-bench-"))
    try:
        dataset = _dataset(args, work)
        print(
            f"machine   {os.cpu_count()} cores ({cpu_name()}), torch {torch.__version__}, "
            f"python {platform.python_version()}, {threads} threads (OMP_NUM_THREADS) for both, device {args.device}"
        )
        print(
            f"workload  model {cfg['model']} width {cfg['width']}, data {dataset}, batch {cfg['batch_size']}, "
            f"{cfg['epochs']} epochs, seed 0, deterministic {args.deterministic}, trainer checkpoint cadence "
            f"auto (checkpoint_every_steps={cfg['checkpoint_every_steps']})"
        )
        sides = ("trainer", "bare", "before") if args.baseline_tree else ("trainer", "bare")
        if args.baseline_tree:
            print(f"before    python -m trainer train from {args.baseline_tree}")
        print(
            f"runs      {', '.join(sides)} in turn, the first rotated each round, until {args.repeats} quiet "
            f"rounds or {max_runs} rounds",
            flush=True,
        )
        rounds: list[dict[str, dict]] = []
        while len(rounds) < max_runs and sum(_quiet(*r.values()) for r in rounds) < args.repeats:
            n = len(rounds) + 1
            order = sides[(n - 1) % len(sides) :] + sides[: (n - 1) % len(sides)]  # an order effect cancels out
            runs: dict[str, dict] = {}
            for side in order:
                if side == "bare":
                    runs[side] = run_bare(work, n, dataset, bare_cfg, env, args.timeout)
                else:
                    tree = args.baseline_tree if side == "before" else REPO
                    runs[side] = run_trainer(work, n, dataset, trainer_hp, env, args.timeout, tree, side)
            rounds.append(runs)
            print(_run_line(n, runs, cfg["epochs"]), flush=True)
        quiet = [r for r in rounds if _quiet(*r.values())]
        if quiet:
            print(
                f"medians   over the {len(quiet)} quiet rounds of {len(rounds)} (other processes used <= "
                f"{100 * QUIET:.0f}% of the CPUs during every run of the round)"
            )
        else:
            quiet = rounds
            print(
                f"warning: none of the {len(rounds)} rounds ran on a quiet machine (other processes used more than "
                f"{100 * QUIET:.0f}% of the CPUs): these medians measure contention more than the trainer; re-run "
                "on an idle machine"
            )
        trainer_runs, bare_runs = [r["trainer"] for r in quiet], [r["bare"] for r in quiet]
        train_samples = trainer_runs[0]["train_samples"] or bare_runs[0]["train_samples"]
        if train_samples != bare_runs[0]["train_samples"] or trainer_runs[0]["steps"] != bare_runs[0]["steps"]:
            print(
                f"warning: trainer saw {train_samples} samples in {trainer_runs[0]['steps']} steps, the bare loop "
                f"{bare_runs[0]['train_samples']} in {bare_runs[0]['steps']}",
                file=sys.stderr,
            )
        print()
        print(report(trainer_runs, bare_runs, train_samples, cfg["epochs"]))
        if args.baseline_tree:
            print(f"\nafter: this tree's trainer ({REPO}); before: {args.baseline_tree}'s")
            print(compare(trainer_runs, [r["before"] for r in quiet], bare_runs, train_samples * cfg["epochs"]))
        if args.keep:
            print(f"\nwork dir  {work}")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # run_child has killed the running child and its processes by now
        print("interrupted: the runs so far are dropped", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _run_line(n: int, runs: dict[str, dict], epochs: int) -> str:
    """One round's figures as they come in: each side's samples/s, and the trainers' ratios to bare."""
    b = runs["bare"]
    b_rate = b["samples"] / b["step_seconds"]
    samples = (runs["trainer"]["train_samples"] or b["train_samples"]) * epochs
    parts = []
    for side in ("trainer", "before"):
        if (t := runs.get(side)) is not None:
            parts.append(
                f"{side} {samples / t['step_seconds']:5.0f} samples/s ({t['step_seconds']:.2f} s, {t['checkpoints']} "
                f"checkpoints {t['checkpoint_seconds']:.3f} s, {_mib(t['maxrss_kib']):.0f} MiB, "
                f"others {_pct(t['others'])}, ratio {samples / t['step_seconds'] / b_rate:.3f})"
            )
    parts.append(
        f"bare {b_rate:5.0f} samples/s ({b['step_seconds']:.2f} s, {b['threads']} threads, "
        f"{_mib(b['maxrss_kib']):.0f} MiB, others {_pct(b['others'])})"
    )
    return f"run {n:<3}  " + "   ".join(parts) + ("" if _quiet(*runs.values()) else "  (not quiet: left out)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
