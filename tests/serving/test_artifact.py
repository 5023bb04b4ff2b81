"""The server verifies an artifact before it runs anything from it."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from serving.artifact import ArtifactError, load_artifact, resolve_model_dir, safe_extract, sha256_file


def _rewrite_manifest(model_dir: Path, **changes) -> None:
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = manifest
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(json.dumps(manifest))


def _rewrite_pt2(path: Path, edit) -> None:
    """Rewrite one member of the .pt2 zip, keeping the rest byte for byte."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    edit(members)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_loads_a_valid_artifact(tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    assert artifact.labels == [str(d) for d in range(10)]
    assert artifact.input_shape == (1, 8, 8)


def test_checksum_mismatch_is_refused(tiny_artifact: Path) -> None:
    model = tiny_artifact / "model.pt2"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"checksum mismatch for .*model\.pt2: .*corrupted or was modified"):
        load_artifact(tiny_artifact)


def test_manifest_problems_are_named(tiny_artifact: Path) -> None:
    _rewrite_manifest(tiny_artifact, format_version=99)
    with pytest.raises(ArtifactError, match="format_version 99 is not supported"):
        load_artifact(tiny_artifact)
    _rewrite_manifest(tiny_artifact, format_version=1, model__file="../../etc/passwd")
    with pytest.raises(ArtifactError, match="points outside the artifact"):
        load_artifact(tiny_artifact)
    (tiny_artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json in .*: point SM_MODEL_DIR at a directory"):
        resolve_model_dir(tiny_artifact)


def test_pickled_weights_are_refused_before_torch_sees_them(tiny_artifact: Path) -> None:
    def flip(members: dict[str, bytes]) -> None:
        name = next(n for n in members if n.endswith("model_weights_config.json"))
        config = json.loads(members[name])
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        members[name] = json.dumps(config).encode()

    model = tiny_artifact / "model.pt2"
    _rewrite_pt2(model, flip)
    _rewrite_manifest(tiny_artifact, model__sha256=sha256_file(model))
    with pytest.raises(ArtifactError, match=r"'features\.0\.0\.weight' is not stored as a plain tensor"):
        load_artifact(tiny_artifact)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_code_in_sample_inputs_never_runs_because_nothing_is_unpickled(
    tiny_artifact: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def poison(members: dict[str, bytes]) -> None:
        name = next(n for n in members if "sample_inputs" in n)
        members[name] = pickle.dumps(_Payload(), protocol=2)

    model = tiny_artifact / "model.pt2"
    _rewrite_pt2(model, poison)
    _rewrite_manifest(tiny_artifact, model__sha256=sha256_file(model))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model file was unpickled")

    import torch

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, never)
    assert load_artifact(tiny_artifact).labels[0] == "0"  # the sample inputs are never read
    assert "this must never run" not in capsys.readouterr().out


def _tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tarfile.TarInfo("../evil.txt"), "escapes the archive"),
        (tarfile.TarInfo("/etc/evil.txt"), "escapes the archive"),
    ],
)
def test_tar_slip_is_refused(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    member.size = 1
    archive = _tar(tmp_path / "model.tar.gz", [member])
    with pytest.raises(ArtifactError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_tar_links_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("model.pt2")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar(tmp_path / "model.tar.gz", [link])
    with pytest.raises(ArtifactError, match="is a link or device"):
        safe_extract(archive, tmp_path / "out")


def test_model_tar_gz_is_extracted_and_loaded(tiny_artifact: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tiny_artifact.iterdir()):
            tar.add(path, arcname=path.name)
    model_dir = resolve_model_dir(archive, scratch=tmp_path)
    assert load_artifact(model_dir).labels[0] == "0"
    assert resolve_model_dir(tiny_artifact) == tiny_artifact


def test_an_archive_extracted_in_process_is_removed_when_the_interpreter_exits(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    """Not only the server: tests and scripts that load a model.tar.gz leave no copy of it in TMPDIR."""
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tiny_artifact.iterdir()):
            tar.add(path, arcname=path.name)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = (
        "import sys, pathlib; from serving.artifact import resolve_model_dir\n"
        f"print(resolve_model_dir(pathlib.Path({str(archive)!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        check=True,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
    )
    assert done.stdout.startswith(str(scratch / "deepcloud-model-"))
    assert list(scratch.iterdir()) == []
