"""Where local state lives. Everything is under DEEPCLOUD_HOME (default ./.deepcloud)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ops.data import DEFAULT_DATASET, dataset_named


@dataclass(frozen=True, slots=True)
class Paths:
    home: Path
    """DEEPCLOUD_HOME: the root of everything below."""

    dataset_name: str = DEFAULT_DATASET
    """DATASET: which dataset `make data` writes and `make train`/`predict` read (ops/data.py DATASETS)."""

    @classmethod
    def from_environ(cls) -> Paths:
        """DEEPCLOUD_HOME and DATASET from the environment; an unknown DATASET is an OpsError listing the choices."""
        name = os.environ.get("DATASET") or DEFAULT_DATASET
        dataset_named(name)
        return cls(Path(os.environ.get("DEEPCLOUD_HOME", ".deepcloud")).absolute(), name)

    @property
    def dataset(self) -> Path:
        """The chosen dataset, with train/validation/test channels; one folder per dataset, so writing one never
        touches another. Kept by `make destroy`."""
        return self.home / "data" / self.dataset_name

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
