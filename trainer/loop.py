"""The training loop: AdamW, linear warmup then cosine decay, one evaluation per epoch."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from trainer.config import TrainConfig
from trainer.data import Split


@dataclass(slots=True)
class History:
    """Per-epoch curves; what the report plots and metrics.json records."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
        x = split.images[start:start + batch_size].to(device)
        y = split.targets[start:start + batch_size].to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
    return {"loss": loss_sum / len(split), "accuracy": correct / len(split)}


def train(model: nn.Module, cfg: TrainConfig, train_split: Split, val_split: Split,
          device: torch.device) -> History:
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        TensorDataset(train_split.images, train_split.targets),
        batch_size=cfg.batch_size, shuffle=True, generator=generator, drop_last=False,
    )
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    total_steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.warmup_fraction))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history = History()
    interactive = sys.stderr.isatty()
    bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=not interactive)
    started = time.perf_counter()
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            if not interactive and step % cfg.log_every_steps == 0:
                print(f"step {step}/{total_steps} epoch {epoch} loss {loss.item():.4f} "
                      f"lr {scheduler.get_last_lr()[0]:.2e}", flush=True)
        model.eval()
        val = evaluate(model, val_split, device)
        history.train_loss.append(loss_sum / seen)
        history.train_accuracy.append(correct / seen)
        history.validation_loss.append(val["loss"])
        history.validation_accuracy.append(val["accuracy"])
        history.lr.append(scheduler.get_last_lr()[0])
        line = (f"epoch {epoch}/{cfg.epochs} train_loss {loss_sum / seen:.4f} "
                f"val_loss {val['loss']:.4f} val_accuracy {val['accuracy']:.4f}")
        if interactive:
            bar.write(line)
        else:
            print(line, flush=True)
    bar.close()
    history.seconds = time.perf_counter() - started
    return history
