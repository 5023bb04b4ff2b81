"""Where SageMaker's training contract puts things, read from the environment.

A bring-your-own container gets only the directory tree under ``/opt/ml`` (``SAGEMAKER_BASE_DIR``
overrides it, as SageMaker's local mode and `make train` do); framework containers also get
``SM_*`` variables. Both are honoured, the variables first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import ConfigError, DataError


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

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> SageMakerEnv:
        env = os.environ if environ is None else environ
        base = Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        return cls(
            base_dir=base,
            model_dir=Path(env.get("SM_MODEL_DIR", base / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", base / "output" / "data")),
            checkpoint_dir=base / "checkpoints",
        )

    @property
    def resource_config_path(self) -> Path:
        return self.base_dir / "input" / "config" / "resourceconfig.json"

    def cluster(self, environ: dict[str, str] | None = None) -> Cluster:
        """The job's hosts: ``SM_HOSTS`` / ``SM_CURRENT_HOST`` when set, else resourceconfig.json, else one host.

        Read apart from :meth:`from_environ` (which cannot fail) so that a malformed file becomes one line in
        output/failure, which needs the paths first.
        """
        return Cluster.read(self.resource_config_path, os.environ if environ is None else environ)

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
            fix = (
                f"{var} names it: point it at the channel's folder"
                if var in env
                else f"pass a '{name}' channel to the job (or set {var})"
            )
            raise DataError(f"input channel '{name}' not found at {path}: {fix}")
        return path

    def download_dir(self, name: str) -> Path:
        """Where an ``s3://`` channel is downloaded: ``<base>/input/data/<name>``, as SageMaker's File mode puts it."""
        return self.base_dir / "input" / "data" / name

    def s3_channels(self, environ: dict[str, str] | None = None) -> list[str]:
        """The names of the channels that ``SM_CHANNEL_<NAME>`` puts on S3 (lower case, as the trainer asks)."""
        env = os.environ if environ is None else environ
        return sorted(
            var.removeprefix("SM_CHANNEL_").lower()
            for var, value in env.items()
            if var.startswith("SM_CHANNEL_") and value.startswith("s3://")
        )

    def has_channel(self, name: str, environ: dict[str, str] | None = None) -> bool:
        env = os.environ if environ is None else environ
        var = f"SM_CHANNEL_{name.upper()}"
        if env.get(var, "").startswith("s3://"):
            return True
        return (Path(env[var]) if var in env else self.base_dir / "input" / "data" / name).is_dir()


@dataclass(frozen=True, slots=True)
class Cluster:
    """The hosts of one training job, as SageMaker describes them to every instance.

    SageMaker writes ``/opt/ml/input/config/resourceconfig.json`` on each instance with ``current_host``,
    ``hosts`` ("sorted lexicographically") and ``network_interface_name``, and warns that "hostname
    information may not be immediately available" (so the names are waited for before use, see
    :func:`trainer.distributed.wait_for_hosts`) and that /etc/hostname and /etc/hosts "might be
    inaccurate": "How Amazon SageMaker Provides Training Information", Distributed Training Configuration,
    https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html
    Framework containers (and the SageMaker training toolkit) also set ``SM_HOSTS`` and ``SM_CURRENT_HOST``;
    those win when present.
    """

    hosts: tuple[str, ...]
    """Every host of the job, in SageMaker's order; the first is node rank 0 and torchrun's rendezvous."""

    current_host: str
    """This host's name; one of ``hosts``."""

    network_interface_name: str | None = None
    """The interface the hosts reach each other on (``eth0`` on SageMaker); None when not given."""

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def others(self) -> tuple[str, ...]:
        """The hosts that are not this one."""
        return tuple(h for h in self.hosts if h != self.current_host)

    @classmethod
    def read(cls, path: Path, env: Mapping[str, str]) -> Cluster:
        resource = _read_resource_config(path)
        where = f"{path.name} 'hosts'"
        if "SM_HOSTS" in env:
            where = "SM_HOSTS"
            try:
                hosts = json.loads(env["SM_HOSTS"])
            except json.JSONDecodeError:
                hosts = None
        else:
            hosts = resource.get("hosts", ["algo-1"])
        if (
            not isinstance(hosts, list)
            or not hosts
            or len(set(map(str, hosts))) != len(hosts)
            or not all(isinstance(h, str) and h for h in hosts)
        ):
            raise ConfigError(
                f'{where} must be a JSON list of distinct host names such as ["algo-1", "algo-2"], '
                f"not {env.get('SM_HOSTS') if where == 'SM_HOSTS' else json.dumps(hosts)}"
            )
        current = env.get("SM_CURRENT_HOST", resource.get("current_host"))
        if current is None and len(hosts) == 1:
            current = hosts[0]
        source = "SM_CURRENT_HOST" if "SM_CURRENT_HOST" in env else f"{path.name} 'current_host'"
        if not isinstance(current, str) or current not in hosts:
            raise ConfigError(f"{source} {current!r} is not one of the job's hosts {hosts}: it must name this host")
        interface = resource.get("network_interface_name")
        if interface is not None and (not isinstance(interface, str) or not interface):
            raise ConfigError(
                f"{path.name} 'network_interface_name' must be an interface name such as \"eth0\", "
                f"not {json.dumps(interface)}"
            )
        return cls(hosts=tuple(hosts), current_host=current, network_interface_name=interface)


def _read_resource_config(path: Path) -> dict:
    """resourceconfig.json as a dict; {} when absent (a local run: one host), an error when unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): SageMaker writes it; "
            "a hand-made one must be an object with 'current_host' and 'hosts'"
        ) from None
    if not isinstance(resource, dict):
        raise ConfigError(f"{path} must hold a JSON object with 'current_host' and 'hosts'")
    return resource
