"""The training loop: AdamW, warmup then cosine decay, checkpoints that resume exactly.

Exact resume rests on three things: each epoch's sample order is a pure function of (seed, epoch), so
the position inside an epoch is just a count; every RNG the step touches is saved and restored; and the
DataLoader draws its worker seeds from its own generator, not the global one, so building a loader
mid-epoch on resume consumes nothing the uninterrupted run did not.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm import tqdm

from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data.samples import Split
from trainer.distributed import Runtime, any_rank, collective_device
from trainer.errors import ConfigError
from trainer.signals import StopFlags

if TYPE_CHECKING:
    from trainer.tracking import Tracking

CHECKPOINT_BUDGET = 0.015
"""Share of step time automatic checkpointing aims at: below the promised 2%, since the cost of one
checkpoint varies from write to write."""

# Fields that change no number in the run: a resume may differ in these and stay exact.
_RESUME_FREE = {
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "checkpoint_s3_uri",
    "num_workers",
    "skip_bad_samples",
    "device",
}


@dataclass(slots=True)
class History:
    """Per-epoch curves; what the report plots and metrics.json records."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class Progress:
    """Where the run is. Saved in every checkpoint; restoring it puts the loop back exactly here."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch, 0-based."""
    micro_batch: int = 0
    """Micro-batches of the current epoch already consumed (per rank)."""
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


class Stopped(Exception):
    """The loop stopped on request after writing checkpoint ``path`` at ``step``."""

    def __init__(self, step: int, path: Path | None) -> None:
        super().__init__(f"stopped at step {step}")
        self.step, self.path = step, path


class EpochSampler(Sampler[int]):
    """A shuffled order that is a pure function of (seed, epoch), sharded over ranks like
    DistributedSampler (padded to a multiple of the world size), and startable mid-epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = math.ceil(size / world_size)
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        """Epoch, and how many of this rank's samples of it were already consumed."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: self.per_rank * self.world_size - self.size]  # pad so every rank gets as many
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.order(self.epoch)[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and conv kernels only: decaying biases and norm scales hurts small models."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``; the caller sets eval mode."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = split.images[start : start + batch_size].to(device)
        y = split.targets[start : start + batch_size].to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
    return {"loss": loss_sum / len(split), "accuracy": correct / len(split)}


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_loader(split: Split, sampler: EpochSampler, cfg: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(
        TensorDataset(split.images, split.targets),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: otherwise each new iterator draws a seed from the global RNG, and a
        # loader built mid-epoch on resume would shift every later dropout mask.
        generator=torch.Generator().manual_seed(cfg.seed),
    )


EVENTS = frozenset({"resumed", "checkpoint"})
"""Kinds whose echoed line starts with their name: 'resumed path=... step=120', 'checkpoint step=... reason=sigusr1'."""


class MetricsLog:
    """metrics.jsonl (one JSON object a line) and key=value lines a SageMaker metric regex can read; every
    record also goes to ``tracker`` (TensorBoard, MLflow: trainer/tracking.py) with the same values."""

    def __init__(self, path: Path | None, enabled: bool, tracker: Tracking | None = None) -> None:
        self.path, self.enabled, self.tracker = path, enabled, tracker
        if enabled and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, echo: bool = True, bar: tqdm | None = None, **values: Any) -> None:
        if not self.enabled:
            return
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"type": kind, "time": round(time.time(), 3), **values}) + "\n")
        if self.tracker is not None:
            self.tracker.record(kind, values)
        if echo:
            line = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            if kind in EVENTS:  # a metric line is key=value only (SageMaker's regexes); an event says what it is
                line = f"{kind} {line}"
            if bar is not None and not bar.disable:
                bar.write(line)
            else:
                print(line, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class CheckpointPolicy:
    """When to checkpoint: every N steps, N fixed or chosen from measured times to stay within budget."""

    def __init__(self, every: int, total_steps: int) -> None:
        self.every = every
        self.auto = every == 0
        self.next = every if every else min(total_steps, 50)  # auto: a first one to measure its cost
        self.saves, self.save_seconds = 0, 0.0

    def due(self, step: int) -> bool:
        return step >= self.next

    def record(self, step: int, seconds: float, mean_step_seconds: float) -> None:
        self.saves += 1
        self.save_seconds += seconds
        if self.auto and mean_step_seconds > 0:
            self.every = max(1, math.ceil((self.save_seconds / self.saves) / (CHECKPOINT_BUDGET * mean_step_seconds)))
        self.next = step + (self.every or 1)


@dataclass
class Checkpointing:
    """Where checkpoints go and how many to keep; ``uploader`` mirrors each to S3 when configured."""

    root: Path
    keep: int
    uploader: Any = None


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig, world_size: int) -> None:
    now = cfg.to_dict()
    changed = [k for k in now if k not in _RESUME_FREE and saved["config"].get(k) != now[k]]
    if changed:
        detail = ", ".join(f"{k}={saved['config'].get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(
            f"the newest checkpoint was written with other hyperparameters ({detail}): "
            "restore them, or clear the checkpoints to start over"
        )
    if saved["world_size"] != world_size:
        raise ConfigError(
            f"the newest checkpoint was written by {saved['world_size']} processes, this job has "
            f"{world_size}: exact resume needs the same number; clear the checkpoints to start over"
        )


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_split: Split,
    val_split: Split,
    runtime: Runtime,
    ckpt: Checkpointing,
    flags: StopFlags,
    metrics_path: Path | None,
    tracker: Tracking | None = None,
) -> History:
    """Train to the end, resuming from the newest valid checkpoint; raises Stopped on SIGTERM.

    ``tracker`` (rank 0's, or None) gets every metrics record as it is written."""
    device = runtime.device
    core = model  # what is saved and exported; ``model`` may be wrapped for DDP or compiled
    if cfg.channels_last and device.type == "cuda":
        core = core.to(memory_format=torch.channels_last)
    if runtime.distributed:
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    sampler = EpochSampler(len(train_split), cfg.seed, runtime.rank, runtime.world_size)
    micro_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum_steps)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups(core, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.warmup_fraction))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    use_amp = amp_dtype is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history, progress = History(), Progress()
    log = MetricsLog(metrics_path, runtime.is_main, tracker)

    # One reader, like one writer: rank 0 picks the newest valid checkpoint of its folder and every other
    # rank receives that very one, so all continue from the same step whatever their own folders hold.
    loaded = None
    if runtime.is_main:
        loaded = checkpoint.load_latest(ckpt.root, report=lambda m: log.write("checkpoint_skipped", message=m))
    if runtime.distributed:
        loaded = checkpoint.share_latest(loaded, collective_device())
    if loaded is not None:
        state = loaded.state
        _check_resumable(state, cfg, runtime.world_size)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        progress = Progress(**state["progress"])
        history = History(**state["history"])
        set_rng_state(state["rng"][runtime.rank])
        log.write("resumed", path=str(loaded.path), step=progress.step, epoch=progress.epoch + 1)

    policy = CheckpointPolicy(cfg.checkpoint_every_steps, total_steps)
    if progress.step:  # resumed: the next multiple of a fixed interval, or measure anew
        policy.next = (progress.step // policy.every + 1) * policy.every if policy.every else progress.step + 1

    def save(reason: str) -> Path | None:
        started = time.perf_counter()
        rngs = [rng_state()]
        if runtime.distributed:
            rngs = [None] * runtime.world_size
            torch.distributed.all_gather_object(rngs, rng_state())
        path = None
        if runtime.is_main:
            state = {
                "model": core.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "progress": asdict(progress),
                "history": asdict(history),
                "rng": rngs,
                "config": cfg.to_dict(),
                "world_size": runtime.world_size,
            }
            path = checkpoint.save(ckpt.root, progress.step, state)
            checkpoint.prune(ckpt.root, ckpt.keep)
            if ckpt.uploader is not None:
                ckpt.uploader(path)
        if runtime.distributed:
            torch.distributed.barrier()
        seconds = time.perf_counter() - started
        policy.record(progress.step, seconds, step_seconds / max(1, steps_timed))
        log.write(
            "checkpoint",
            echo=reason != "schedule",
            step=progress.step,
            reason=reason,
            seconds=round(seconds, 4),
            path=str(path),
        )
        return path

    interactive = runtime.is_main and sys.stderr.isatty()
    bar = tqdm(total=total_steps, initial=progress.step, unit="step", dynamic_ncols=True, disable=not interactive)
    step_seconds, steps_timed, started = 0.0, 0, time.perf_counter()
    flags.in_loop = True
    try:
        for epoch in range(progress.epoch, cfg.epochs):
            sampler.set_position(epoch, progress.micro_batch * cfg.batch_size)
            model.train()
            accumulated, t0 = 0, time.perf_counter()
            remaining = micro_per_epoch - progress.micro_batch
            for i, (x, y) in enumerate(make_loader(train_split, sampler, cfg, device)):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if cfg.channels_last and device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                last_of_step = accumulated + 1 == cfg.grad_accum_steps or i + 1 == remaining
                sync = contextlib.nullcontext() if (last_of_step or not runtime.distributed) else model.no_sync()
                with sync, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                    logits = model(x)
                    loss = criterion(logits, y)
                    scaler.scale(loss / cfg.grad_accum_steps).backward()
                accumulated += 1
                progress.micro_batch += 1
                progress.loss_sum += loss.item() * len(y)
                progress.correct += (logits.argmax(dim=1) == y).sum().item()
                progress.seen += len(y)
                if not last_of_step:
                    continue
                if cfg.grad_clip_norm > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(core.parameters(), cfg.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                accumulated = 0
                progress.step += 1
                now = time.perf_counter()
                step_seconds += now - t0
                steps_timed += 1
                t0 = now
                bar.update(1)
                if interactive:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                if progress.step % cfg.log_every_steps == 0:
                    log.write(
                        "step",
                        echo=not interactive,
                        step=progress.step,
                        epoch=epoch + 1,
                        loss=loss.item(),
                        lr=scheduler.get_last_lr()[0],
                    )
                stop = any_rank(flags.stop, runtime)
                if stop or any_rank(flags.snapshot, runtime) or policy.due(progress.step):
                    flags.snapshot = False
                    path = save("sigterm" if stop else "schedule" if policy.due(progress.step) else "sigusr1")
                    t0 = time.perf_counter()  # checkpoint time is not step time
                    if stop:
                        raise Stopped(progress.step, path)
            model.eval()
            val = evaluate(core, val_split, device)
            history.train_loss.append(progress.loss_sum / max(1, progress.seen))
            history.train_accuracy.append(progress.correct / max(1, progress.seen))
            history.validation_loss.append(val["loss"])
            history.validation_accuracy.append(val["accuracy"])
            history.lr.append(scheduler.get_last_lr()[0])
            log.write(
                "epoch",
                bar=bar,
                epoch=epoch + 1,
                train_loss=history.train_loss[-1],
                train_accuracy=history.train_accuracy[-1],
                validation_loss=val["loss"],
                validation_accuracy=val["accuracy"],
            )
            progress = Progress(step=progress.step, epoch=epoch + 1)
    finally:
        bar.close()
    history.seconds += time.perf_counter() - started
    log.write(
        "done",
        echo=False,
        steps=progress.step,
        seconds=round(history.seconds, 3),
        step_seconds=round(step_seconds, 4),
        steps_timed=steps_timed,
        checkpoint_seconds=round(policy.save_seconds, 4),
        checkpoints=policy.saves,
    )
    return history
