"""Where the program meets the Pulumi engine and CLI: the stack tag, the one `pulumi` command line (the policy pack
on every preview and up), and one-line errors when either is missing. Standard library only: ops imports it too, so
`python -m infra.cli up` and ops's own `pulumi up` (ops/aws/pulumi.py) run the same command."""

from __future__ import annotations

import shutil
from pathlib import Path

STACK_TAG = "deepcloud:stack"
"""Tag key on every taggable resource; its value is `<project>/<stack>`, so leftovers can be audited by tag."""
INSTALL_HINT = (
    "install it: curl -fsSL https://get.pulumi.com | sh (or brew install pulumi/tap/pulumi), then "
    "pulumi login (see README, 'The AWS workflow')"
)
"""How to get the pulumi CLI: the end of the one line both `python -m infra.cli` and `make ... TARGET=aws` print."""
POLICY_PACK = Path(__file__).resolve().parent / "policy"
"""The policy pack: the engine runs its mandatory rules in the preview and stops before anything changes."""
POLICY_ACTIONS = ("preview", "up")
"""The actions the policy pack is attached to (`pulumi destroy` takes none)."""


class CliMissing(Exception):
    """No pulumi CLI on PATH; the message is the one line that says how to install it."""


def require_engine() -> None:
    """Stop with one line when the program is run by python directly rather than by `pulumi`."""
    from pulumi.runtime.settings import get_monitor

    if get_monitor() is None:
        raise SystemExit(
            "error: infra/ is a Pulumi program: run `pulumi preview` or `pulumi up` in the repository root, not python"
        )


def pulumi_cli(binary: str = "pulumi") -> str:
    """Path of the `pulumi` executable, or CliMissing saying how to install it."""
    path = shutil.which(binary)
    if path is None:
        raise CliMissing(f"the {binary} CLI is not installed (no `{binary}` on PATH): {INSTALL_HINT}")
    return path


def pulumi_command(
    executable: str, action: str, *args: str, stack: str | None = None, interactive: bool = True
) -> list[str]:
    """``pulumi ACTION ARGS``, with the policy pack for preview and up, ``--stack`` when one is named, and
    ``--non-interactive`` for a caller that reads the output rather than a person at a terminal."""
    argv = [executable, action, *args]
    if action in POLICY_ACTIONS:
        argv += ["--policy-pack", str(POLICY_PACK)]
    if stack:
        argv += ["--stack", stack]
    if not interactive:
        argv.append("--non-interactive")
    return argv
