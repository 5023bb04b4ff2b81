"""SIGTERM and SIGUSR1: the platform's "stop soon" and the user's "checkpoint now".

SageMaker's StopTrainingJob and an ECS spot interruption send SIGTERM and SIGKILL 120 s later. The
handler only sets a flag; the loop finishes the current step, writes a checkpoint and exits with
:data:`EXIT_STOPPED`. Before the loop runs (data loading, downloads) there is nothing to save, so a
SIGTERM then stops at once.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

EXIT_STOPPED = 143
"""Exit status after a requested stop (128 + SIGTERM): not a success, since no model was written,
and not a failure, so output/failure is not written."""


class StopRequested(Exception):
    """SIGTERM arrived; raised where stopping at once is safe."""


class StopFlags:
    def __init__(self) -> None:
        self.stop = False
        self.snapshot = False
        self.in_loop = False

    def install(self) -> StopFlags:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        return self

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        if not self.in_loop:
            raise StopRequested

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.snapshot = True


class Stopped(Exception):
    """The loop stopped on request after writing checkpoint ``path`` at ``step``."""

    def __init__(self, step: int, path: Path | None) -> None:
        super().__init__(f"stopped at step {step}")
        self.step, self.path = step, path
