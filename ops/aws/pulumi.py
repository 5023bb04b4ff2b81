"""The `pulumi` CLI as ops runs it: captured or streamed, one-line errors, `pulumi up` always with the policy pack.

The command line itself is infra/engine.py's, the one `python -m infra.cli` runs too: the same policy pack on every
`up`, and the same line when the CLI is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from infra.engine import CliMissing, pulumi_cli, pulumi_command
from ops import proc
from ops.errors import OpsError


class Pulumi:
    """The `pulumi` CLI, run in the repository root (where Pulumi.yaml is), on one stack."""

    def __init__(self, repo: Path, stack: str | None = None, binary: str = "pulumi") -> None:
        self.repo = repo
        self.stack = stack
        self.binary = binary

    def _argv(self, action: str, *args: str, stack: bool = True) -> list[str]:
        try:
            exe = pulumi_cli(self.binary)
        except CliMissing as exc:
            raise OpsError(str(exc)) from None
        return pulumi_command(exe, action, *args, stack=self.stack if stack else None, interactive=False)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}

    def run(self, *args: str, what: str, hint: str = "", stack: bool = True) -> str:
        """Run `pulumi ARGS`; its stdout, or an OpsError: ``what``, pulumi's own error line, then ``hint``."""
        try:
            done = subprocess.run(
                self._argv(*args, stack=stack),
                cwd=self.repo,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OpsError(f"`pulumi {' '.join(args)}` did not answer within 300 s") from None
        if done.returncode != 0:
            said = _error_line(done.stdout + done.stderr, done.returncode)
            raise OpsError(f"{what} (pulumi: {said})" + (f": {hint}" if hint else ""))
        return done.stdout

    def stream(
        self,
        *args: str,
        what: str,
        on_line: Callable[[str], None],
        poll: Callable[[], object] | None = None,
        poll_seconds: float = 5.0,
    ) -> None:
        """Run a long `pulumi` command (up, destroy), each output line to ``on_line`` as it comes and ``poll``
        every ``poll_seconds`` meanwhile (ops watches the endpoint while `pulumi up` waits for it)."""
        code, lines = proc.stream(
            self._argv(*args), self.repo, on_line, env=self._env(), poll=poll, poll_seconds=poll_seconds
        )
        if code != 0:
            raise OpsError(f"{what} (pulumi: {_error_line(chr(10).join(lines), code)})")

    def up(
        self, *, on_line: Callable[[str], None], poll: Callable[[], object] | None = None, poll_seconds: float = 5.0
    ) -> None:
        """`pulumi up` gated by the policy pack (pulumi_command attaches it): the preview, not skipped, runs its rules
        before any change."""
        self.stream(
            "up",
            "--yes",
            what="pulumi up failed",
            on_line=on_line,
            poll=poll,
            poll_seconds=poll_seconds,
        )

    def stack_name(self) -> str:
        name = self.run(
            "stack",
            "--show-name",
            what="no Pulumi stack is selected",
            hint="run `pulumi login`, then `pulumi stack init dev` (or `pulumi stack select dev`)",
        ).strip()
        if not name:
            raise OpsError("no Pulumi stack is selected: run `pulumi stack init dev` (or `pulumi stack select dev`)")
        return name

    def outputs(self) -> dict:
        text = self.run("stack", "output", "--json", what="cannot read the stack outputs")
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise OpsError(f"`pulumi stack output --json` printed something that is not JSON: {text[:80]!r}") from None
        return data if isinstance(data, dict) else {}

    def config(self) -> dict[str, str]:
        """The stack's config as `namespace:key` -> value (secrets show as '[secret]')."""
        text = self.run("config", "--json", what="cannot read the stack config")
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise OpsError(f"`pulumi config --json` printed something that is not JSON: {text[:80]!r}") from None
        return {
            key: str(entry.get("value", "[secret]")) if isinstance(entry, dict) else str(entry)
            for key, entry in data.items()
        }

    def managed_arns(self) -> set[str]:
        """The ARNs of every resource still in the stack's state (`pulumi stack export`): after
        `pulumi destroy --exclude-protected`, what was kept on purpose."""
        text = self.run("stack", "export", what="cannot read the stack's state")
        try:
            resources = json.loads(text or "{}").get("deployment", {}).get("resources", []) or []
        except (json.JSONDecodeError, AttributeError):
            raise OpsError(f"`pulumi stack export` printed something that is not a deployment: {text[:80]!r}") from None
        arns = set()
        for resource in resources:
            for value in (resource.get("outputs") or {}).values():
                if isinstance(value, str) and value.startswith("arn:"):
                    arns.add(value.removesuffix(":*"))
        return arns

    def set_config(self, key: str, value: str) -> None:
        self.run("config", "set", key, value, what=f"cannot set {key}")

    def remove_config(self, key: str) -> None:
        self.run("config", "rm", key, what=f"cannot remove {key}")


def _error_line(output: str, code: int) -> str:
    """Pulumi's own `error: ...` line (its first one), else its last line, else the exit code."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error:"):
            return line[len("error:") :].strip()
    return lines[-1] if lines else f"pulumi exited with code {code}"
