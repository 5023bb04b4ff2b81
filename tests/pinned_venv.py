"""A venv of its own for tools whose dependencies the rooms' venv must not take (the OIP clients, the MLflow
server): made from one pinned requirements file, reused while that file is unchanged, and started in the
background when the test session starts, so that it is ready by the time a test needs it."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import venv
from pathlib import Path


class PinnedVenv:
    def __init__(self, path: Path, requirements: Path, what: str) -> None:
        self.path, self.requirements, self.what = path, requirements, what
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    def _digest(self) -> str:
        return hashlib.sha256(self.requirements.read_bytes()).hexdigest()

    def ready(self) -> bool:
        marker = self.path / ".installed"
        return (self.path / "bin" / "python").exists() and marker.exists() and marker.read_text() == self._digest()

    def _make(self) -> None:
        try:
            venv.create(self.path, with_pip=True, clear=True)
            done = subprocess.run(
                [
                    str(self.path / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    str(self.requirements),
                ],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if done.returncode == 0:
                (self.path / ".installed").write_text(self._digest())
            else:
                self._error = f"installing the {self.what} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        except Exception as exc:  # reported by python() to the test that needs it, not lost in a thread
            self._error = f"making {self.path} failed: {type(exc).__name__}: {exc}"

    def start(self) -> None:
        """Begin making the venv in a thread, when it is not there already (called at the session's start)."""
        if self._thread is None and not self.ready():
            self._thread = threading.Thread(target=self._make, name=f"{self.path.name}-venv", daemon=True)
            self._thread.start()

    def python(self) -> Path:
        """The venv's interpreter, once it is made (waiting for the background install, or making it now)."""
        self.start()
        if self._thread is not None:
            self._thread.join()
        assert self._error is None, self._error
        assert self.ready(), f"{self.path} is not complete"
        return self.path / "bin" / "python"
