"""How a setting is named and refused: the `deepcloud:` namespace, the key of each field, the one-line error."""

from __future__ import annotations

import pulumi

NAMESPACE = "deepcloud"
"""The config namespace: the project name in Pulumi.yaml."""


class ConfigError(pulumi.RunError):
    """A bad or missing setting; Pulumi prints a RunError as one line, without a traceback."""


def config_key(field_name: str) -> str:
    """`gpu_max_instances` -> `gpuMaxInstances`, the key under the deepcloud: namespace."""
    head, *rest = field_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def require(ok: bool, field_name: str | None, message: str) -> None:
    """Raise a ConfigError unless `ok`: `message` after the setting's key, or alone for a setting outside the
    namespace (`field_name` None)."""
    if not ok:
        raise ConfigError(message if field_name is None else f"{NAMESPACE}:{config_key(field_name)} {message}")
