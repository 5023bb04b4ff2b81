"""Long-running CLI processes (docker build/push, pulumi up/destroy): output streamed line by line, a
callback between lines, Ctrl-C passed on, and a clear line when the CLI is not installed."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ops.errors import OpsError


def require(binary: str, install_hint: str) -> str:
    """The full path of ``binary`` on PATH, or an OpsError saying how to install it."""
    exe = shutil.which(binary)
    if exe is None:
        raise OpsError(f"the {binary} CLI is not installed (no `{binary}` on PATH): {install_hint}")
    return exe


def stream(
    argv: Sequence[str],
    cwd: Path,
    on_line: Callable[[str], None],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    poll: Callable[[], object] | None = None,
    poll_seconds: float = 5.0,
) -> tuple[int, list[str]]:
    """Run ``argv`` with stdout and stderr merged; each line goes to ``on_line`` as it comes and ``poll`` runs
    every ``poll_seconds`` meanwhile. Returns (exit code, all lines). On Ctrl-C (or any error in a callback)
    the process gets SIGTERM, which docker and pulumi both handle by cancelling cleanly."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        text=True,
        bufsize=1,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=poll_seconds if poll else None)
            except queue.Empty:
                assert poll is not None
                poll()
                continue
            if line is None:
                break
            seen.append(line)
            on_line(line)
        return proc.wait(), seen
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
