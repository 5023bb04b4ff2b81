"""Checkpoint files: atomic, checksummed, newest-valid-wins; and the sampler that makes resume exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data.samples import Split
from trainer.sampler import EpochSampler, make_loader


def _state(step: int) -> dict:
    return {"weights": torch.full((64,), float(step)), "step": step, "rng": (3, tuple(range(5)), None)}


def _three(root: Path) -> None:
    for step in (10, 20, 30):
        checkpoint.save(root, step, _state(step))


def test_roundtrip_and_layout(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 7, _state(7))
    assert path == tmp_path / "step-7"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.pt"]
    commit = json.loads((path / "manifest.json").read_text())
    assert commit["files"]["state.pt"]["bytes"] == (path / "state.pt").stat().st_size
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded.step == 7
    assert torch.equal(loaded.state["weights"], torch.full((64,), 7.0))
    assert loaded.state["rng"] == (3, (0, 1, 2, 3, 4), None)
    assert list(tmp_path.glob(".tmp*")) == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "state.pt").write_bytes((p / "state.pt").read_bytes()[:100]), "truncated"),
        (lambda p: (p / "manifest.json").unlink(), "no commit marker"),
        (lambda p: _flip_byte(p / "state.pt"), "does not match its sha256"),
        (lambda p: (p / "manifest.json").write_text("{"), "manifest.json is unreadable"),
    ],
)
def test_damaged_newest_falls_back_to_the_previous(tmp_path: Path, damage, reason: str) -> None:
    _three(tmp_path)
    damage(tmp_path / "step-30")
    reports: list[str] = []
    loaded = checkpoint.load_latest(tmp_path, report=reports.append)
    assert loaded.step == 20
    assert len(reports) == 1
    assert reports[0].startswith(f"checkpoint {tmp_path / 'step-30'} skipped: ")
    assert reason in reports[0]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_verified_file_that_holds_code_is_not_loaded(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("must never run",))

    checkpoint.save(tmp_path, 1, _state(1))
    path = checkpoint.save(tmp_path, 2, {"x": Payload()})  # torch.save pickles it; load must refuse
    reports: list[str] = []
    loaded = checkpoint.load_latest(tmp_path, report=reports.append)
    assert loaded.step == 1
    assert "state.pt does not load" in reports[0]
    assert str(path) in reports[0]


def test_nothing_to_resume(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path / "absent") is None
    (tmp_path / "step-5").mkdir()
    assert checkpoint.load_latest(tmp_path, report=lambda _: None) is None


def test_prune_keeps_the_newest_committed(tmp_path: Path) -> None:
    _three(tmp_path)
    (tmp_path / ".tmp-step-40-999999").mkdir()  # what a SIGKILL mid-write leaves
    removed = checkpoint.prune(tmp_path, keep=2)
    assert removed == [tmp_path / "step-10"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-20", "step-30"]


def test_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = EpochSampler(100, seed=1), EpochSampler(100, seed=1)
    assert a.order(3) == b.order(3)
    assert a.order(3) != a.order(4)
    assert sorted(a.order(0)) == list(range(100))
    shards = [EpochSampler(101, seed=1, rank=r, world_size=2).order(0) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert set(shards[0]) | set(shards[1]) == set(range(101))


def test_next_eight_batches_after_resume_are_identical() -> None:
    split = Split(
        images=torch.arange(200 * 4, dtype=torch.float32).view(200, 1, 2, 2),
        targets=torch.arange(200) % 10,
        classes=tuple(str(i) for i in range(10)),
    )
    cfg = TrainConfig(batch_size=7, seed=5)
    sampler = EpochSampler(len(split), cfg.seed)
    sampler.set_position(2, 0)
    uninterrupted = [y.tolist() for _, y in make_loader(split, sampler, cfg, torch.device("cpu"))]
    resumed_at = 11
    sampler.set_position(2, resumed_at * cfg.batch_size)
    resumed = [y.tolist() for _, y in make_loader(split, sampler, cfg, torch.device("cpu"))]
    assert resumed[:8] == uninterrupted[resumed_at : resumed_at + 8]
    assert resumed == uninterrupted[resumed_at:]
    rng = torch.get_rng_state()
    list(make_loader(split, sampler, cfg, torch.device("cpu")))
    assert torch.equal(rng, torch.get_rng_state()), "building a loader must not consume the global RNG"
