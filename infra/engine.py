"""Where the program meets the Pulumi engine and CLI: the stack tag, and one-line errors when either is missing."""

from __future__ import annotations

import shutil

STACK_TAG = "deepcloud:stack"
"""Tag key on every taggable resource; its value is `<project>/<stack>`, so leftovers can be audited by tag."""
INSTALL_HINT = (
    "install it: curl -fsSL https://get.pulumi.com | sh (or brew install pulumi/tap/pulumi), then "
    "pulumi login (see README, 'The AWS workflow')"
)
"""ops/aws/stack.py says the same (it imports this), so both commands give one line, worded alike."""


def require_engine() -> None:
    """Stop with one line when the program is run by python directly rather than by `pulumi`."""
    from pulumi.runtime.settings import get_monitor

    if get_monitor() is None:
        raise SystemExit(
            "error: infra/ is a Pulumi program: run `pulumi preview` or `pulumi up` in the repository root, not python"
        )


def pulumi_cli() -> str:
    """Path of the `pulumi` executable, or a one-line error that says how to install it."""
    path = shutil.which("pulumi")
    if path is None:
        raise SystemExit(f"error: the pulumi CLI is not installed (no `pulumi` on PATH): {INSTALL_HINT}")
    return path
