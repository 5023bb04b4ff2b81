"""The aws target on a machine that lacks its prerequisites, and its settings: every stop is one line on stderr,
exit code 1, never a traceback. Run in this process (`ops.__main__.main`), with the environment of such a machine."""

from __future__ import annotations

import pytest

from ops.__main__ import main
from tests.ops.conftest import one_line_error
from tests.ops.test_cli import NO_AWS

NO_CREDENTIALS = "no AWS credentials found: run `aws configure` (or `aws sso login`), or set AWS_PROFILE"
NO_PULUMI = "the pulumi CLI is not installed (no `pulumi` on PATH): install it: curl -fsSL https://get.pulumi.com | sh"


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys):
    """Run `python -m ops ARGS` here with no pulumi, docker or AWS credentials: (exit code, stdout, stderr)."""
    for name, value in NO_AWS.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    for name in ("TARGET", "BACKEND", "MAX_COST", "MAX_HOURS", "STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEEPCLOUD_HOME", str(tmp_path))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize(
    ("command", "first_missing"),
    [
        # these run the preflight checks, credentials first
        *[pytest.param(c, NO_CREDENTIALS, id=c) for c in ("preflight", "train", "deploy", "rollback", "destroy")],
        # these start by reading the stack outputs
        *[pytest.param(c, NO_PULUMI, id=c) for c in ("data", "status", "logs", "predict")],
    ],
)
def test_a_bare_machine_gets_one_line(bare, tmp_path, command: str, first_missing: str) -> None:
    code, _, err = bare("--target", "aws", command)
    line = one_line_error(code, err, first_missing)
    assert line.endswith(("or set AWS_PROFILE", "(see README, 'The AWS workflow')"))
    assert not (tmp_path / "local").exists()


@pytest.mark.parametrize("command", ["demo"])
def test_local_only_commands_on_aws(bare, command: str) -> None:
    one_line_error(*bare("--target", "aws", command)[::2], f"`{command}` runs on TARGET=local only: ")


@pytest.mark.parametrize("command", ["preflight", "rollback", "status", "logs"])
def test_aws_only_commands_on_local(bare, command: str) -> None:
    one_line_error(*bare(command)[::2], f"`{command}` is for TARGET=aws: run make {command} TARGET=aws")


def test_settings_from_the_environment_are_checked(bare, monkeypatch) -> None:
    monkeypatch.setenv("BACKEND", "batch")
    one_line_error(
        *bare("--target", "aws", "train")[::2],
        "BACKEND=batch is not a training backend: use ecs (default) or sagemaker",
    )
    monkeypatch.delenv("BACKEND")
    monkeypatch.setenv("MAX_COST", "five")
    one_line_error(*bare("--target", "aws", "train")[::2], "MAX_COST='five' is not a number: write e.g. MAX_COST=5")
    monkeypatch.setenv("TARGET", "aws")
    monkeypatch.setenv("MAX_COST", "5")
    one_line_error(*bare("train", "--hp", "epochs")[::2], "hyperparameter 'epochs' is not name=value")
