"""`python -m infra.cli preview|up|destroy [--stack NAME]`: the Pulumi CLI with the policy pack attached.

    preview   pulumi preview --policy-pack infra/policy   (what would change, checked against every rule)
    up        pulumi up --policy-pack infra/policy        (the same checks gate the deployment)
    destroy   pulumi destroy                              (the data bucket is protected unless config says not)

Runs in the repository root, where Pulumi.yaml is. Without the pulumi CLI on PATH it stops with one line
saying how to install it; nothing else here needs the CLI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from infra.engine import pulumi_cli

REPO = Path(__file__).resolve().parent.parent
POLICY_PACK = REPO / "infra" / "policy"


def command(action: str, stack: str | None, executable: str) -> list[str]:
    """The pulumi command line for `action`."""
    argv = [executable, action]
    if action in ("preview", "up"):
        argv += ["--policy-pack", str(POLICY_PACK)]
    if stack:
        argv += ["--stack", stack]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cli", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("preview", "up", "destroy"))
    parser.add_argument("--stack", help="Pulumi stack (default: the selected one)")
    args = parser.parse_args(argv)
    executable = pulumi_cli()
    return subprocess.run(command(args.action, args.stack, executable), cwd=REPO, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
