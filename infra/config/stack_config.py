"""StackConfig: the settings once they have passed every check, the only form the program and ops build."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config.checks import check
from infra.config.settings import Settings


@dataclass(kw_only=True, frozen=True, slots=True)
class StackConfig(Settings):
    """The stack's settings (infra/config/settings.py), checked when built: a bad value raises a ConfigError that names
    its key, so no component ever sees a setting AWS would refuse."""

    def __post_init__(self) -> None:
        check(self)
