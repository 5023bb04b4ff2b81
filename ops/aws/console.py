"""What the aws commands print: headers, phases with elapsed time, tables, a live status line, questions."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from tqdm import tqdm


def say(text: str = "") -> None:
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def header(text: str) -> None:
    say(f"==> {text}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Rows as aligned text lines (printed by the caller), the header first."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


class Phases:
    """Prints a line each time the phase changes, with the time since the start, and keeps a status line
    (elapsed time and cost so far) at the bottom of the terminal; the status line is off when stderr is not a
    terminal, so logs and CI output get only the plain lines."""

    def __init__(self, what: str, clock=time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.phase = ""
        self.bar = tqdm(
            total=None,
            desc=what,
            bar_format="{desc}{postfix}",
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty(),
        )

    def elapsed(self) -> float:
        return self.clock() - self.start

    def enter(self, phase: str, detail: str = "") -> bool:
        """Announce ``phase`` if it is new; True when it was."""
        if phase == self.phase:
            return False
        self.phase = phase
        say(f"[{_clock(self.elapsed())}] {phase}" + (f": {detail}" if detail else ""))
        return True

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(f" {self.phase} {_clock(self.elapsed())} {text}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def ask(question: str, default: bool) -> bool:
    """A yes/no question on the terminal; without one (stdin not a tty) the default is the answer."""
    hint = "[Y/n]" if default else "[y/N]"
    if not sys.stdin.isatty():
        say(f"{question} {hint} (no terminal: {'yes' if default else 'no'})")
        return default
    try:
        answer = input(f"{question} {hint} ").strip().lower()
    except EOFError:
        return default
    return default if not answer else answer in ("y", "yes")
