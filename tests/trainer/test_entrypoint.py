"""`python -m trainer train` on the SageMaker training contract, run as a process like the container."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO, TRAINED_EPOCHS, make_job, run_on_terminal, run_trainer

pytestmark = pytest.mark.slow


def _assert_clean_failure(base: Path, result, message: str) -> None:
    assert result.returncode == 1, result.stderr
    failure = (base / "output" / "failure").read_text()
    assert message in failure
    assert result.stderr.strip().splitlines()[-1] == f"error: {failure.strip()}"
    assert "Traceback" not in result.stderr, "an expected failure must not print a traceback"
    model_dir = base / "model"
    assert not (model_dir / "manifest.json").exists(), "a failed job must not leave an artifact"
    leftovers = list(model_dir.glob(".*tmp*")) if model_dir.exists() else []
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_bad_hyperparameter_writes_failure_and_exits_nonzero(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "ten"})
    result = run_trainer(base)
    _assert_clean_failure(base, result, "hyperparameter 'epochs' must be an integer, got 'ten'")


def test_unknown_hyperparameter_names_the_allowed_ones(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epoch": "3"})
    _assert_clean_failure(base, run_trainer(base), "unknown hyperparameter 'epoch': allowed are batch_size")


def test_missing_channel_writes_failure(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"}, channels=("train",))
    _assert_clean_failure(
        base,
        run_trainer(base),
        "input channel 'validation' not found at " + str(base / "input" / "data" / "validation"),
    )


def test_a_channel_variable_naming_a_missing_folder_says_to_point_it_right(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"}, channels=("train",))
    missing = tmp_path / "nowhere"
    result = run_trainer(base, env={"SM_CHANNEL_VALIDATION": str(missing)})
    _assert_clean_failure(
        base,
        result,
        f"input channel 'validation' not found at {missing}: SM_CHANNEL_VALIDATION "
        "names it: point it at the channel's folder",
    )  # not 'or set' it


def test_a_base_folder_that_does_not_exist_yet_still_gets_the_failure_file(tmp_path: Path, dataset: Path) -> None:
    """docs/data.md's own example: SAGEMAKER_BASE_DIR=/tmp/job (not made yet) and channels given by variable."""
    base = tmp_path / "job"
    result = run_trainer(
        base, env={"SM_CHANNEL_TRAIN": str(tmp_path / "nowhere"), "SM_CHANNEL_VALIDATION": str(dataset / "validation")}
    )
    _assert_clean_failure(
        base,
        result,
        f"input channel 'train' not found at {tmp_path / 'nowhere'}: SM_CHANNEL_TRAIN "
        "names it: point it at the channel's folder",
    )
    assert "could not write" not in result.stderr


def test_corrupt_sample_is_named_in_the_failure(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"})
    victim = sorted((base / "input" / "data" / "validation" / "images").iterdir())[3]
    victim.write_bytes(b"not a png")
    _assert_clean_failure(base, run_trainer(base), f"sample {victim} is not a readable image")


def test_unexpected_argument_is_a_usage_error(tmp_path: Path) -> None:
    result = run_trainer(tmp_path, args=("serve",))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unexpected arguments 'serve': run 'python -m trainer [train]'"


def test_channel_from_sm_channel_variable(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"}, channels=("train",))
    result = run_trainer(
        base, env={"SM_CHANNEL_VALIDATION": str(dataset / "validation"), "SM_MODEL_DIR": str(tmp_path / "elsewhere")}
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "elsewhere" / "manifest.json").exists()
    assert not (base / "output" / "failure").exists()


def test_successful_job_writes_artifact_report_and_metrics(trained_job: Path) -> None:
    manifest = json.loads((trained_job / "model" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["model"]["format"] == "torch.export"
    assert manifest["labels"] == [str(d) for d in range(10)]
    assert manifest["input"] == {"dtype": "float32", "shape": [1, 8, 8], "layout": "NCHW"}
    assert manifest["training"]["config"]["epochs"] == int(TRAINED_EPOCHS)
    assert manifest["metrics"]["test"]["accuracy"] >= 0.95
    assert sorted(p.name for p in (trained_job / "model").iterdir()) == ["manifest.json", "model.pt2"]
    report = (trained_job / "output" / "data" / "report.png").read_bytes()
    assert report[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", report[16:24])
    assert (width, height) == (1000, 400)
    metrics = json.loads((trained_job / "output" / "data" / "metrics.json").read_text())
    assert len(metrics["history"]["validation_accuracy"]) == int(TRAINED_EPOCHS)
    assert metrics["metrics"] == manifest["metrics"]
    assert not (trained_job / "output" / "failure").exists()


def test_same_seed_gives_the_same_weights(tmp_path: Path, dataset: Path, trained_job: Path) -> None:
    """deterministic=true (the default) on CPU: a second run reproduces the artifact's weights exactly."""
    base = make_job(tmp_path / "job", dataset, {"epochs": TRAINED_EPOCHS, "seed": "0"})
    assert run_trainer(base).returncode == 0
    first = json.loads((trained_job / "model" / "manifest.json").read_text())
    second = json.loads((base / "model" / "manifest.json").read_text())
    assert first["metrics"] == second["metrics"]
    import torch

    a = torch.export.load(trained_job / "model" / "model.pt2").state_dict
    b = torch.export.load(base / "model" / "model.pt2").state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise(tmp_path: Path, dataset: Path) -> None:
    hyperparameters = {"epochs": "1", "log_every_steps": "5"}
    plain = run_trainer(make_job(tmp_path / "plain", dataset, hyperparameters))
    assert plain.returncode == 0, plain.stderr
    assert "step=5 epoch=1 loss=" in plain.stdout
    assert "\r" not in plain.stderr, "no progress-bar redraws when stderr is not a terminal"

    base = make_job(tmp_path / "tty", dataset, hyperparameters)
    code, screen, stdout = run_on_terminal([PYTHON, "-m", "trainer", "train"], {"SAGEMAKER_BASE_DIR": str(base)})
    assert code == 0
    assert b"\r" in screen, f"expected a redrawn progress bar on the terminal, got {screen[-300:]!r}"
    assert b"20/20" in screen
    assert "step=5 " not in stdout, "plain step lines are for logs, not terminals"
    assert "validation_loss=" in stdout


def test_unexpected_error_still_writes_failure(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"})
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = run_trainer(base, env={"SM_MODEL_DIR": str(blocker)})
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("internal error: FileExistsError")
    assert result.stderr.strip().splitlines()[-1] == f"error: {failure.strip()}"


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs to start as root")
@pytest.mark.skipif(
    not _world_traversable(Path(sys.base_prefix) / "lib") or not _world_traversable(REPO),
    reason="this Python or checkout lives where an unprivileged user cannot read it (e.g. /root)",
)
def test_starts_as_root_and_trains_as_the_unprivileged_user(dataset: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # under /tmp, traversable by the unprivileged user
        root = Path(scratch)
        root.chmod(0o755)
        base = make_job(root / "job", dataset, {"epochs": "1"})
        for path in (base, *base.rglob("*")):
            path.chmod(path.stat().st_mode | 0o005)  # readable by others, as SageMaker's input mount is
        result = run_trainer(base, env={"DEEPCLOUD_RUN_AS": "65534:65534"})
        assert result.returncode == 0, result.stderr
        for made in (
            base / "model" / "model.pt2",
            base / "output" / "data" / "report.png",
            next((base / "checkpoints").iterdir()),
        ):
            assert (made.stat().st_uid, made.stat().st_gid) == (65534, 65534), made
        bad = run_trainer(make_job(root / "bad", dataset, {"epochs": "1"}), env={"DEEPCLOUD_RUN_AS": "0:0"})
        assert bad.returncode == 1
        assert "DEEPCLOUD_RUN_AS='0:0' must be 'uid:gid' of a non-root user" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs to start as root")
def test_drop_privileges_hands_over_the_writable_layout() -> None:
    from trainer.privileges import drop_privileges
    from trainer.sagemaker_env import SageMakerEnv

    scratch = Path(tempfile.mkdtemp())  # under /tmp, traversable by the unprivileged user
    scratch.chmod(0o755)
    base = scratch / "job"
    (base / "checkpoints" / "step-3").mkdir(parents=True)  # synced down by the platform, owned by root
    (base / "checkpoints" / "step-3" / "state.pt").write_bytes(b"x")
    env = SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(base)})
    pid = os.fork()
    if pid == 0:  # the child drops for good; the test process keeps root
        code = 1
        try:
            assert drop_privileges(env, "65534:65534") == (65534, 65534)
            (env.model_dir / "model.pt2").write_bytes(b"weights")
            (env.checkpoint_dir / "step-3" / "state.pt").write_bytes(b"y")
            code = 0 if (os.getuid(), os.getgid(), os.geteuid()) == (65534, 65534, 65534) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (env.model_dir / "model.pt2").stat().st_uid == 65534
    assert (base / "checkpoints" / "step-3" / "state.pt").read_bytes() == b"y"
    assert (base / "output").stat().st_uid == 65534
    shutil.rmtree(scratch)
