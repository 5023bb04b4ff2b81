"""The training state: a checkpoint restores every part it saved, and one with a part more or less is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer import checkpoint
from trainer.checkpoint import Checkpointing
from trainer.config import TrainConfig
from trainer.data.samples import Split
from trainer.distributed import Runtime
from trainer.errors import ConfigError
from trainer.loop import Trainer
from trainer.metrics_log import MetricsLog
from trainer.model.build import build_model
from trainer.signals import StopFlags
from trainer.state import History, Progress, TrainState

RUNTIME = Runtime(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _split(n: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=generator).float()
    return Split(images=images, targets=torch.arange(n) % 3, classes=("a", "b", "c"))


def _trainer(root: Path, seed: int, **hp: Any) -> Trainer:
    torch.manual_seed(seed)  # a fresh model differs from the trained one until it is restored
    cfg = TrainConfig(epochs=2, batch_size=8, width=4, seed=0, checkpoint_every_steps=1000, **hp)
    model = build_model("cnn", in_channels=1, num_classes=3, width=4, dropout=0.1, mean=[0.5], std=[0.25])
    splits = (_split(32, 1), _split(16, 2))
    log = MetricsLog(None, enabled=False)
    return Trainer(model, cfg, splits, RUNTIME, Checkpointing(root=root, keep=3), StopFlags(), log)


def _same(a: Any, b: Any, where: str = "state") -> None:
    """Equal all the way down: tensors bit for bit, containers element by element."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_checkpoint_restores_every_part_of_the_state(tmp_path: Path) -> None:
    trained = _trainer(tmp_path, seed=0)
    trained.run()
    trained.checkpoint("sigusr1")
    saved = trained.state.state_dict()
    after_save = torch.rand(4)  # what the generators give next, once restored too

    fresh = _trainer(tmp_path, seed=1)
    assert not torch.equal(next(fresh.core.parameters()), next(trained.core.parameters()))
    fresh.resume()

    restored = fresh.state.state_dict()
    assert set(restored) == {f.name for f in dataclasses.fields(TrainState)}
    _same(restored, saved)
    assert torch.equal(torch.rand(4), after_save)
    assert fresh.progress == trained.progress
    assert fresh.history == trained.history


def test_a_checkpoint_with_a_part_more_or_less_is_refused(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, seed=0)
    state = trainer.state.state_dict()
    with pytest.raises(ConfigError, match=r"lacks scaler and has nothing more"):
        trainer.state.load_state_dict({k: v for k, v in state.items() if k != "scaler"})
    with pytest.raises(ConfigError, match=r"lacks nothing and has ema more"):
        trainer.state.load_state_dict({**state, "ema": {}})


def test_a_part_added_to_the_state_is_saved_and_must_be_restored(tmp_path: Path) -> None:
    """The save and restore of a part cannot be written apart: both come from the dataclass's fields."""

    @dataclasses.dataclass(slots=True)
    class WithExtra(TrainState):
        extra: Progress = dataclasses.field(default_factory=Progress)

    trainer = _trainer(tmp_path, seed=0)
    parts = {f.name: getattr(trainer.state, f.name) for f in dataclasses.fields(TrainState)}
    state = WithExtra(**parts, extra=Progress(step=7))
    saved = state.state_dict()
    assert saved["extra"]["step"] == 7

    other = WithExtra(**parts)
    other.load_state_dict(saved)
    assert other.extra == Progress(step=7)
    with pytest.raises(ConfigError, match="lacks extra"):
        other.load_state_dict(trainer.state.state_dict())


def test_progress_and_history_restore_all_their_fields_or_refuse() -> None:
    progress = Progress(step=3, epoch=1, micro_batch=2, loss_sum=1.5, correct=4, seen=8)
    copy = Progress()
    copy.load_state_dict(progress.state_dict())
    assert copy == progress
    with pytest.raises(ConfigError, match="Progress lacks seen"):
        copy.load_state_dict({k: v for k, v in progress.state_dict().items() if k != "seen"})
    history = History(train_loss=[1.0], lr=[0.1], seconds=2.0)
    with pytest.raises(ConfigError, match="History lacks nothing and has momentum more"):
        History().load_state_dict({**history.state_dict(), "momentum": []})


def test_resume_may_change_only_the_fields_marked_resume_free(tmp_path: Path) -> None:
    assert TrainConfig.resume_free() == {
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "checkpoint_s3_uri",
        "num_workers",
        "skip_bad_samples",
        "device",
    }
    trained = _trainer(tmp_path, seed=0)
    trained.run()
    trained.checkpoint("sigusr1")

    _trainer(tmp_path, seed=0, log_every_steps=1, keep_checkpoints=5, device="cpu").resume()
    with pytest.raises(ConfigError, match=r"other hyperparameters \(lr=0\.003 -> 0\.01\)"):
        _trainer(tmp_path, seed=0, lr=0.01).resume()


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, seed=0)
    checkpoint.save(tmp_path, 1, {**trainer.state.state_dict(), "world_size": 2})
    with pytest.raises(ConfigError, match="written by 2 processes, this job has 1"):
        _trainer(tmp_path, seed=0).resume()
