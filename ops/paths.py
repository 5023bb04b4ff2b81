"""Where local state lives. Everything is under DEEPCLOUD_HOME (default ./.deepcloud)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Paths:
    home: Path

    @classmethod
    def from_environ(cls) -> Paths:
        return cls(Path(os.environ.get("DEEPCLOUD_HOME", ".deepcloud")).absolute())

    @property
    def dataset(self) -> Path:
        """The demo dataset, with train/validation/test channels. Kept by `make destroy`."""
        return self.home / "data" / "digits"

    @property
    def local(self) -> Path:
        """Everything the local target created; `make destroy` removes it."""
        return self.home / "local"

    @property
    def jobs(self) -> Path:
        return self.local / "jobs"

    @property
    def server(self) -> Path:
        return self.local / "server"
