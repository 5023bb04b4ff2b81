"""Where SageMaker's training contract puts things, read from the environment.

A bring-your-own container gets only the directory tree under ``/opt/ml`` (``SAGEMAKER_BASE_DIR``
overrides it, as SageMaker's local mode and `make train` do); framework containers also get
``SM_*`` variables. Both are honoured, the variables first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import DataError


@dataclass(frozen=True, slots=True)
class SageMakerEnv:
    base_dir: Path
    """Root of the layout (``SAGEMAKER_BASE_DIR``, default ``/opt/ml``)."""

    model_dir: Path
    """Where the model artifact goes; SageMaker packs it into model.tar.gz (``SM_MODEL_DIR``)."""

    output_data_dir: Path
    """Extra outputs (report, metrics); SageMaker packs them into output.tar.gz (``SM_OUTPUT_DATA_DIR``)."""

    checkpoint_dir: Path
    """Checkpoints; SageMaker syncs this folder with S3 (``<base>/checkpoints``)."""

    hosts: tuple[str, ...]
    """All hosts of the job (``SM_HOSTS`` or resourceconfig.json); one host here."""

    current_host: str
    """This host's name (``SM_CURRENT_HOST``)."""

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> SageMakerEnv:
        env = os.environ if environ is None else environ
        base = Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        resource = _read_json(base / "input" / "config" / "resourceconfig.json")
        hosts = tuple(json.loads(env["SM_HOSTS"])) if "SM_HOSTS" in env else tuple(
            resource.get("hosts", ["algo-1"])
        )
        return cls(
            base_dir=base,
            model_dir=Path(env.get("SM_MODEL_DIR", base / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", base / "output" / "data")),
            checkpoint_dir=base / "checkpoints",
            hosts=hosts,
            current_host=env.get("SM_CURRENT_HOST", resource.get("current_host", hosts[0])),
        )

    @property
    def hyperparameters_path(self) -> Path:
        return self.base_dir / "input" / "config" / "hyperparameters.json"

    @property
    def failure_path(self) -> Path:
        return self.base_dir / "output" / "failure"

    def channel(self, name: str, environ: dict[str, str] | None = None) -> Path:
        """The directory of input channel ``name``; a clear error when it does not exist.

        ``SM_CHANNEL_<NAME>`` may also hold an ``s3://bucket/prefix`` URI (ECS, or a local run against S3):
        the prefix is then downloaded into ``<base>/input/data/<name>``, where SageMaker's File mode would
        have put it, and that directory is returned. The download resumes: files already there with the
        listed size are not fetched again.
        """
        env = os.environ if environ is None else environ
        var = f"SM_CHANNEL_{name.upper()}"
        if env.get(var, "").startswith("s3://"):
            from trainer import s3  # boto3 is imported only when a channel lives on S3

            local = self.download_dir(name)
            s3.download_prefix(env[var], local, progress=True)
            return local
        path = Path(env[var]) if var in env else self.base_dir / "input" / "data" / name
        if not path.is_dir():
            # where SM_CHANNEL_<NAME> already names the folder, setting it is not the fix: pointing it right is
            fix = (f"{var} names it: point it at the channel's folder" if var in env
                   else f"pass a '{name}' channel to the job (or set {var})")
            raise DataError(f"input channel '{name}' not found at {path}: {fix}")
        return path

    def download_dir(self, name: str) -> Path:
        """Where an ``s3://`` channel is downloaded: ``<base>/input/data/<name>``, as SageMaker's File mode puts it."""
        return self.base_dir / "input" / "data" / name

    def s3_channels(self, environ: dict[str, str] | None = None) -> list[str]:
        """The names of the channels that ``SM_CHANNEL_<NAME>`` puts on S3 (lower case, as the trainer asks)."""
        env = os.environ if environ is None else environ
        return sorted(var.removeprefix("SM_CHANNEL_").lower() for var, value in env.items()
                      if var.startswith("SM_CHANNEL_") and value.startswith("s3://"))

    def has_channel(self, name: str, environ: dict[str, str] | None = None) -> bool:
        env = os.environ if environ is None else environ
        var = f"SM_CHANNEL_{name.upper()}"
        if env.get(var, "").startswith("s3://"):
            return True
        return (Path(env[var]) if var in env else self.base_dir / "input" / "data" / name).is_dir()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
