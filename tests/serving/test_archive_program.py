"""serving/program.py runs a torch.export archive as torch.export.load(...).module() does, without its imports."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.serve import write_artifact
from serving.program import ArchiveProgram, load_program
from serving.program_steps import SYM_OPS
from serving.pt2_archive import DTYPES, LAYOUTS, MEMORY_FORMATS, SCHEMA_MAJOR, Unsupported
from trainer.artifact import export_program
from trainer.model.build import build_model

REPO = Path(__file__).resolve().parents[2]


class Odd(nn.Module):
    """The other paths: a symbolic size, a buffer, a constant made in forward, list ops, a two-output op,
    and a tuple returned."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(48)
        self.head = nn.Linear(48, 10)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.reshape(x.shape[0], -1) * self.scale + torch.tensor([1.0])
        a, b = y.split(24, dim=1)
        y = torch.cat([b, a], 1)
        top, index = y.max(dim=1, keepdim=True)
        return torch.softmax(self.head(self.bn(y - top)), -1), index


def _export(model: nn.Module, example: torch.Tensor, path: Path, max_batch: int = 64) -> Path:
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    torch.export.save(torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)), path)
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("archives")
    torch.manual_seed(0)
    found = {}
    for name in ("cnn", "resnet"):
        model = build_model(
            name,
            in_channels=3,
            image_size=(32, 32),
            num_classes=10,
            width=8,
            dropout=0.1,
            mean=[0.5] * 3,
            std=[0.25] * 3,
        ).eval()
        found[f"trainer {name}"] = root / f"{name}.pt2"
        export_program(model, torch.rand(2, 3, 32, 32) * 255, found[f"trainer {name}"])
    for name in ("mlp", "cnn"):
        write_artifact(name, root / f"bench-{name}")
        found[f"bench {name}"] = root / f"bench-{name}" / "model.pt2"
    found["odd"] = _export(Odd(), torch.rand(2, 3, 4, 4), root / "odd.pt2")
    return found


def _input(name: str, batch: int) -> torch.Tensor:
    shape = {"bench mlp": (1, 8, 8), "odd": (3, 4, 4)}.get(name, (3, 32, 32))
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch)) * 255


def _same(a: object, b: object) -> bool:
    if isinstance(b, tuple):
        return type(a) is tuple and len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return isinstance(a, torch.Tensor) and torch.equal(a, b)


@pytest.mark.parametrize("name", ["trainer cnn", "trainer resnet", "bench mlp", "bench cnn", "odd"])
def test_outputs_are_bit_identical_to_torch_export_load(archives: dict[str, Path], name: str) -> None:
    ours, theirs = ArchiveProgram.load(archives[name]), torch.export.load(archives[name]).module()
    with torch.inference_mode():
        for batch in (1, 3, 17):
            x = _input(name, batch)
            assert _same(ours(x), theirs(x)), f"{name}, batch {batch}"


@pytest.mark.parametrize("loader", ["serving.program.load_program", "torch.export.load"])
def test_the_reader_leaves_dynamo_and_sympy_unimported(archives: dict[str, Path], loader: str) -> None:
    script = (
        f"import sys, torch, serving.program\n"
        f"m = {loader}({str(archives['bench cnn'])!r})\n"
        f"m = m if isinstance(m, torch.nn.Module) else m.module()\n"
        f"m(torch.zeros(2, 3, 32, 32))\n"
        f"print(sorted(n for n in ('torch._dynamo', 'sympy') if n in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    imported = done.stdout.strip().splitlines()[-1]
    # torch.export.load imports both: the check can tell the two apart
    assert imported == ("[]" if loader.startswith("serving") else "['sympy', 'torch._dynamo']")


class WithCond(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,))


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return x * 2


def test_control_flow_is_refused_unless_the_file_is_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _export(WithCond(), torch.rand(2, 4), tmp_path / "cond.pt2")
    with pytest.raises(Unsupported, match=r"operator torch\.ops\.higher_order\.cond"):
        ArchiveProgram.load(path)
    with pytest.raises(Unsupported, match=r"operator torch\.ops\.higher_order\.cond"):
        load_program(path)
    with caplog.at_level(logging.WARNING, logger="serving.program"):
        module = load_program(path, trusted=True)
    assert "loading it with torch.export.load because --trust-model-files is on" in caplog.text
    x = torch.rand(3, 4)
    assert torch.equal(module(x), x + 1)
    assert torch.equal(module(-x - 1), -x - 2)


def test_a_program_that_writes_to_its_own_buffer_is_refused(tmp_path: Path) -> None:
    # torch.export's default (training) IR keeps the in-place op on the buffer: refused at load, so one
    # request cannot change the answer to the next (torch's own module would count its calls)
    path = _export(Counting(), torch.rand(2, 4), tmp_path / "counting.pt2")
    with pytest.raises(Unsupported, match=r"add_\.Tensor writes to the program's own weights"):
        ArchiveProgram.load(path)
    # after run_decompositions() the update is a BUFFER_MUTATION output: refused too
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Counting().eval(), (torch.rand(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program.run_decompositions(), tmp_path / "functional.pt2")
    with pytest.raises(Unsupported, match="buffer_mutation"):
        ArchiveProgram.load(tmp_path / "functional.pt2")


def _tampered(source: Path, dest: Path, edit) -> Path:
    with zipfile.ZipFile(source) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    model = next(name for name in members if name.endswith("/models/model.json"))
    program = json.loads(members[model])
    edit(program, members)
    members[model] = json.dumps(program).encode()
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dest


@pytest.mark.parametrize("target", ["torch.load", "builtins.eval", "torch.ops.aten.__class__.x", "os.system"])
def test_a_node_target_outside_aten_is_never_resolved(archives: dict[str, Path], tmp_path: Path, target: str) -> None:
    def edit(program: dict, members: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    path = _tampered(archives["bench mlp"], tmp_path / "evil.pt2", edit)
    with pytest.raises(Unsupported, match=f"operator {re.escape(target)}"):
        ArchiveProgram.load(path)


def test_another_schema_major_or_a_pickled_payload_is_not_read(archives: dict[str, Path], tmp_path: Path) -> None:
    def newer(program: dict, members: dict) -> None:
        program["schema_version"]["major"] = SCHEMA_MAJOR + 1

    with pytest.raises(Unsupported, match=f"schema version {SCHEMA_MAJOR + 1}"):
        ArchiveProgram.load(_tampered(archives["bench mlp"], tmp_path / "newer.pt2", newer))

    def pickled(program: dict, members: dict) -> None:
        config = next(name for name in members if name.endswith("model_weights_config.json"))
        weights = json.loads(members[config])
        next(iter(weights["config"].values()))["use_pickle"] = True
        members[config] = json.dumps(weights).encode()

    with pytest.raises(Unsupported, match="not stored as a plain tensor"):
        ArchiveProgram.load(_tampered(archives["bench mlp"], tmp_path / "pickled.pt2", pickled))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3, 32), "rank 4"),
        ((2, 3, 32, 31), "dimension 3 must be 32"),
        ((2, 1, 32, 32), "dimension 1 must be 3"),
        ((4097, 3, 32, 32), r"dimension 0 must lie in \[1, 4096\]"),
    ],
)
def test_inputs_are_checked_as_the_exported_module_checks_them(
    archives: dict[str, Path], shape: tuple[int, ...], message: str
) -> None:
    ours, theirs = ArchiveProgram.load(archives["trainer cnn"]), torch.export.load(archives["trainer cnn"]).module()
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        ours(x)
    with pytest.raises(Exception):  # noqa: B017, PT011 - torch's own module refuses the same inputs
        theirs(x)


class SharedActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return (torch.relu(y) + y + torch.relu(self.b(x))).mean((2, 3))  # a's output has two readers


def test_conv_relu_pairs_are_fused_only_where_the_conv_has_one_reader(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    program = ArchiveProgram.load(archives["bench cnn"])
    x = _input("bench cnn", 5)
    with torch.inference_mode():
        plain = program(x)
        assert program.fuse_conv_relu() == 3
        assert program.fused == 3
        torch.testing.assert_close(program(x), plain, rtol=1e-5, atol=1e-5)
        program.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            program(x.contiguous(memory_format=torch.channels_last)), plain, rtol=1e-5, atol=1e-5
        )
        assert program.fuse_conv_relu(False) == 0
        assert program.fused == 0

    assert ArchiveProgram.load(archives["trainer cnn"]).fuse_conv_relu() == 0  # conv -> batch_norm -> relu
    shared = ArchiveProgram.load(_export(SharedActivation(), torch.rand(2, 3, 8, 8), tmp_path / "shared.pt2"))
    with torch.inference_mode():
        before = shared(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
        assert shared.fuse_conv_relu() == 1  # b only
        after = shared(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_the_enum_tables_match_torch_serialization() -> None:
    from torch._export.serde import schema, serialize

    assert schema.SCHEMA_VERSION[0] == SCHEMA_MAJOR
    assert {int(k): v for k, v in serialize._SERIALIZE_TO_TORCH_DTYPE.items() if int(k)} == DTYPES
    assert {int(k): v for k, v in serialize._SERIALIZE_TO_TORCH_LAYOUT.items() if int(k)} == LAYOUTS
    assert {int(k): v for k, v in serialize._SERIALIZE_TO_TORCH_MEMORY_FORMAT.items() if int(k)} == MEMORY_FORMATS
    assert set(SYM_OPS.values()) >= set(serialize._SYM_OPS)
