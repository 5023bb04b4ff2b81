"""Dropping root (trainer/privileges.py) never reaches outside the job's own folders through a symbolic link.

The trainer starts as root on SageMaker and ECS and chowns the writable parts of /opt/ml to DEEPCLOUD_RUN_AS before
it drops to that user. A symbolic link where one of those folders should be, or anywhere inside them, must not
make root chown (or create) what the link points to: the link is refused or left alone, its target untouched.
Each case runs drop_privileges in a forked child, so the test process keeps root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_job, run_trainer
from trainer.errors import ConfigError
from trainer.privileges import drop_privileges
from trainer.sagemaker_env import SageMakerEnv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs to start as root")

NOBODY = (65534, 65534)
LINKED = ("model", "output", "checkpoints", "input", "input/data", "input/data/train")
"""The folders drop_privileges hands over (input/data/train for an s3:// channel), or makes on the way."""


@pytest.fixture
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp())  # under /tmp, traversable by the unprivileged user
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _victim(scratch: Path) -> Path:
    """Root's files outside the job: what a link may point at."""
    victim = scratch / "victim"
    (victim / "inner").mkdir(parents=True)
    (victim / "secret").write_text("root's")
    (victim / "inner" / "deeper").write_text("root's too")
    return victim


def _state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_uid, p.lstat().st_gid) for p in (root, *root.rglob("*"))}


def _drop_in_child(env: SageMakerEnv, read_end: int, write_end: int) -> tuple[int, str]:
    """(exit code, message) of drop_privileges run in a child: 0 dropped, 3 a ConfigError (message), 1 anything else."""
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code, message = 1, ""
        try:
            drop_privileges(env, f"{NOBODY[0]}:{NOBODY[1]}")
            code = 0
        except ConfigError as exc:
            code, message = 3, str(exc)
        except BaseException as exc:  # reported to the parent, which fails the test
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as fh:
        message = fh.read()
    return os.waitstatus_to_exitcode(status), message


def _drop(base: Path, environ: dict[str, str] | None = None) -> tuple[int, str]:
    env = SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(base)})
    saved = dict(os.environ)
    os.environ.update(environ or {})
    try:
        return _drop_in_child(env, *os.pipe())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("folder", LINKED)
def test_a_symlinked_folder_is_refused_and_its_target_untouched(scratch: Path, folder: str) -> None:
    victim = _victim(scratch)
    before = _state(victim)
    base = scratch / "job"
    (base / folder).parent.mkdir(parents=True, exist_ok=True)
    (base / folder).symlink_to(victim, target_is_directory=True)
    code, message = _drop(base, {"SM_CHANNEL_TRAIN": "s3://bucket/digits/train/"})
    assert _state(victim) == before, f"root chowned or made something in {victim} through {folder} -> {victim}"
    assert code == 3, f"exit {code}: {message}"
    assert message.startswith(f"{base / folder} is a symbolic link"), message


def test_a_symlink_inside_a_handed_over_folder_is_not_followed(scratch: Path) -> None:
    victim = _victim(scratch)
    before = _state(victim)
    base = scratch / "job"
    step = base / "checkpoints" / "step-3"
    step.mkdir(parents=True)
    (step / "state.pt").write_bytes(b"x")
    (step / "inner").symlink_to(victim, target_is_directory=True)  # a folder link inside
    (step / "secret").symlink_to(victim / "secret")  # a file link inside
    (base / "model").mkdir()
    (base / "model" / "dangling").symlink_to(scratch / "nothing-here")
    code, message = _drop(base)
    assert code == 0, message
    assert _state(victim) == before, "root chowned what a link inside the job points at"
    assert (step / "state.pt").stat().st_uid == NOBODY[0], "the folder's own files are handed over"
    assert (step / "inner").is_symlink(), "the link stays a link"


def test_the_trainer_refuses_a_linked_output_folder_and_writes_nothing_through_it(scratch: Path, dataset: Path) -> None:
    """The whole process: the handover fails on the link, and the failure is not written through it either (root
    still, at that point)."""
    victim = _victim(scratch)
    before = _state(victim)
    base = make_job(scratch / "job", dataset, {"epochs": "1"}, channels=("train",))
    (base / "output").symlink_to(victim, target_is_directory=True)
    result = run_trainer(base, env={"DEEPCLOUD_RUN_AS": f"{NOBODY[0]}:{NOBODY[1]}"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {base / 'output'} is a symbolic link")
    assert "Traceback" not in result.stderr
    assert _state(victim) == before, "root wrote output/failure through the link"
