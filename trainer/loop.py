"""The training loop: AdamW, warmup then cosine decay, checkpoints that resume exactly.

Exact resume rests on three things: each epoch's sample order is a pure function of (seed, epoch), so
the position inside an epoch is just a count (:mod:`trainer.sampler`); every RNG the step touches is saved
and restored (:mod:`trainer.rng`); and the DataLoader draws its worker seeds from its own generator, not the
global one, so building a loader mid-epoch on resume consumes nothing the uninterrupted run did not.

What a checkpoint holds is :class:`trainer.state.TrainState`; when one is written is
:class:`trainer.cadence.CheckpointPolicy`'s call; what the loop logs goes through
:class:`trainer.metrics_log.MetricsLog`. :class:`Trainer` runs the steps in order:
:meth:`~Trainer.resume`, then per epoch :meth:`~Trainer.train_epoch` and :meth:`~Trainer.end_epoch`, then
:meth:`~Trainer.finish`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from tqdm import tqdm

from trainer import checkpoint
from trainer.cadence import CheckpointPolicy
from trainer.checkpoint import Checkpointing
from trainer.config import TrainConfig
from trainer.data.samples import Split
from trainer.distributed import Runtime, any_rank, collective_device
from trainer.metrics_log import MetricsLog
from trainer.optim import param_groups, warmup_cosine
from trainer.rng import RankRngs
from trainer.sampler import EpochSampler, make_loader
from trainer.signals import StopFlags, Stopped
from trainer.state import History, Progress, SavedConfig, SavedWorldSize, TrainState

if TYPE_CHECKING:
    from trainer.tracking import Tracking


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


@dataclass(slots=True)
class StepTimer:
    """Seconds spent in optimizer steps only: evaluation and checkpoint writes are not step time."""

    seconds: float = 0.0
    steps: int = 0
    last: float = 0.0

    def restart(self) -> None:
        """The next step starts now (an epoch begins, or a checkpoint was just written)."""
        self.last = time.perf_counter()

    def tick(self) -> None:
        """A step ended now."""
        now = time.perf_counter()
        self.seconds += now - self.last
        self.steps += 1
        self.last = now

    def mean(self) -> float:
        return self.seconds / max(1, self.steps)


class Trainer:
    """One run of the loop over ``model``: built once, then :meth:`run` trains it to the end.

    ``splits`` is (train, validation); ``log`` takes every metrics record (rank 0 writes, the others' is off)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        splits: tuple[Split, Split],
        runtime: Runtime,
        ckpt: Checkpointing,
        flags: StopFlags,
        log: MetricsLog,
    ) -> None:
        self.cfg, self.runtime, self.ckpt, self.flags, self.log = cfg, runtime, ckpt, flags, log
        self.train_split, self.val_split = splits
        self.device = runtime.device
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.core, self.ddp, self.model = self._wrap(model)
        self.sampler = EpochSampler(len(self.train_split), cfg.seed, runtime.rank, runtime.world_size)
        self.micro_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        self.total_steps = cfg.epochs * math.ceil(self.micro_per_epoch / cfg.grad_accum_steps)
        optimizer = torch.optim.AdamW(param_groups(self.core, cfg.weight_decay), lr=cfg.lr)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.use_amp = self.amp_dtype is not None and self.device.type == "cuda"
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.state = TrainState(
            config=SavedConfig(cfg),
            world_size=SavedWorldSize(runtime.world_size),
            model=self.core,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(
                optimizer, warmup_cosine(self.total_steps, cfg.warmup_fraction)
            ),
            scaler=torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16),
            progress=Progress(),
            history=History(),
            rng=RankRngs(runtime),
        )
        self.policy = CheckpointPolicy(cfg.checkpoint_every_steps, self.total_steps)
        self.timer = StepTimer()
        self.interactive = runtime.is_main and sys.stderr.isatty()

    def _wrap(self, model: nn.Module) -> tuple[nn.Module, nn.parallel.DistributedDataParallel | None, nn.Module]:
        """(core, its DDP wrapper or None, what the steps call). ``core`` is what is saved and exported."""
        core = model
        if self.channels_last:
            # torch's stubs give Module.to no memory_format, which it takes (and documents) at run time.
            core = core.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        ddp, wrapped = None, core
        if self.runtime.distributed:
            index = [self.device.index] if self.device.type == "cuda" else None
            ddp = wrapped = nn.parallel.DistributedDataParallel(core, device_ids=index)
        if self.cfg.compile:
            # torch.compile of a Module returns an OptimizedModule, a Module; its stubs say only "a callable".
            wrapped = cast(nn.Module, torch.compile(wrapped))
        return core, ddp, wrapped

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def history(self) -> History:
        return self.state.history

    def run(self) -> History:
        """Train to the end, resuming from the newest valid checkpoint; raises Stopped on SIGTERM."""
        self.resume()
        bar = tqdm(
            total=self.total_steps,
            initial=self.progress.step,
            unit="step",
            dynamic_ncols=True,
            disable=not self.interactive,
        )
        started = time.perf_counter()
        self.flags.in_loop = True
        try:
            for epoch in range(self.progress.epoch, self.cfg.epochs):
                self.train_epoch(epoch, bar)
                self.end_epoch(epoch, bar)
        finally:
            bar.close()
        self.history.seconds += time.perf_counter() - started
        self.finish()
        return self.history

    def resume(self) -> None:
        """Continue from the newest valid checkpoint, if there is one.

        One reader, like one writer: rank 0 picks the newest valid checkpoint of its folder and every other
        rank receives that very one, so all continue from the same step whatever their own folders hold."""
        loaded = None
        if self.runtime.is_main:
            loaded = checkpoint.load_latest(
                self.ckpt.root, report=lambda m: self.log.write("checkpoint_skipped", message=m)
            )
        if self.runtime.distributed:
            loaded = checkpoint.share_latest(loaded, collective_device())
        if loaded is None:
            return
        self.state.load_state_dict(loaded.state)
        self.log.write("resumed", path=str(loaded.path), step=self.progress.step, epoch=self.progress.epoch + 1)
        if self.progress.step:
            self.policy.resume_at(self.progress.step)

    def train_epoch(self, epoch: int, bar: tqdm) -> None:
        """The optimizer steps of ``epoch`` from where its progress stands; checkpoints when due."""
        cfg, progress = self.cfg, self.progress
        self.sampler.set_position(epoch, progress.micro_batch * cfg.batch_size)
        self.model.train()
        accumulated = 0
        self.timer.restart()
        remaining = self.micro_per_epoch - progress.micro_batch
        for i, (x, y) in enumerate(make_loader(self.train_split, self.sampler, cfg, self.device)):
            last_of_step = accumulated + 1 == cfg.grad_accum_steps or i + 1 == remaining
            loss = self._forward_backward(x, y, last_of_step)
            accumulated += 1
            if not last_of_step:
                continue
            self._optimizer_step()
            accumulated = 0
            self.timer.tick()
            bar.update(1)
            self._after_step(epoch, loss, bar)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, last_of_step: bool) -> torch.Tensor:
        """One micro-batch: forward, loss, scaled backward (gradients synced on the step's last one only)."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = contextlib.nullcontext() if (last_of_step or self.ddp is None) else self.ddp.no_sync()
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.use_amp)
        with sync, autocast:
            logits = self.model(x)
            loss = self.criterion(logits, y)
            self.state.scaler.scale(loss / self.cfg.grad_accum_steps).backward()
        progress = self.progress
        progress.micro_batch += 1
        progress.loss_sum += loss.item() * len(y)
        progress.correct += int((logits.argmax(dim=1) == y).sum().item())
        progress.seen += len(y)
        return loss

    def _optimizer_step(self) -> None:
        state = self.state
        if self.cfg.grad_clip_norm > 0:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(self.core.parameters(), self.cfg.grad_clip_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        state.progress.step += 1

    def _after_step(self, epoch: int, loss: torch.Tensor, bar: tqdm) -> None:
        """Report the step, then checkpoint when asked (SIGTERM, SIGUSR1) or due; stop after SIGTERM's."""
        step = self.progress.step
        if self.interactive:
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        if step % self.cfg.log_every_steps == 0:
            lr = float(self.state.scheduler.get_last_lr()[0])
            self.log.write("step", echo=not self.interactive, step=step, epoch=epoch + 1, loss=loss.item(), lr=lr)
        stop = any_rank(self.flags.stop, self.runtime)
        if stop or any_rank(self.flags.snapshot, self.runtime) or self.policy.due(step):
            self.flags.snapshot = False
            path = self.checkpoint("sigterm" if stop else "schedule" if self.policy.due(step) else "sigusr1")
            self.timer.restart()  # checkpoint time is not step time
            if stop:
                raise Stopped(step, path)

    def checkpoint(self, reason: str) -> Path | None:
        """Write the state (rank 0; every rank takes part in gathering it); the path, or None on other ranks."""
        started = time.perf_counter()
        state = self.state.state_dict()
        path = None
        if self.runtime.is_main:
            path = checkpoint.save(self.ckpt.root, self.progress.step, state)
            checkpoint.prune(self.ckpt.root, self.ckpt.keep)
            if self.ckpt.uploader is not None:
                self.ckpt.uploader(path)
        if self.runtime.distributed:
            torch.distributed.barrier()
        seconds = time.perf_counter() - started
        self.policy.record(self.progress.step, seconds, self.timer.mean())
        self.log.write(
            "checkpoint",
            echo=reason != "schedule",
            step=self.progress.step,
            reason=reason,
            seconds=round(seconds, 4),
            path=str(path),
        )
        return path

    def end_epoch(self, epoch: int, bar: tqdm) -> None:
        """Evaluate on the validation split, extend the history, log the epoch, reset the epoch's counters."""
        self.model.eval()
        val = evaluate(self.core, self.val_split, self.device)
        history, progress = self.history, self.progress
        history.train_loss.append(progress.loss_sum / max(1, progress.seen))
        history.train_accuracy.append(progress.correct / max(1, progress.seen))
        history.validation_loss.append(val["loss"])
        history.validation_accuracy.append(val["accuracy"])
        history.lr.append(float(self.state.scheduler.get_last_lr()[0]))
        self.log.write(
            "epoch",
            bar=bar,
            epoch=epoch + 1,
            train_loss=history.train_loss[-1],
            train_accuracy=history.train_accuracy[-1],
            validation_loss=val["loss"],
            validation_accuracy=val["accuracy"],
        )
        self.state.progress = Progress(step=progress.step, epoch=epoch + 1)

    def finish(self) -> None:
        """The ``done`` record: totals the bench and the tests read."""
        self.log.write(
            "done",
            echo=False,
            steps=self.progress.step,
            seconds=round(self.history.seconds, 3),
            step_seconds=round(self.timer.seconds, 4),
            steps_timed=self.timer.steps,
            checkpoint_seconds=round(self.policy.save_seconds, 4),
            checkpoints=self.policy.saves,
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
    log = MetricsLog(metrics_path, runtime.is_main, tracker)
    return Trainer(model, cfg, (train_split, val_split), runtime, ckpt, flags, log).run()
