"""From Pulumi's strings to a StackConfig: every `deepcloud:` key is known, every value is parsed to its field's type.

Values arrive as strings, whatever YAML the stack file holds; a list may be JSON or comma-separated. Unknown keys are
refused with the closest known one, so a typo stops `pulumi preview` with one line instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from typing import Any

import pulumi

from infra.config.keys import NAMESPACE, ConfigError, config_key
from infra.config.stack_config import StackConfig

_FIXED = ("project", "stack", "region")
KEYS = {config_key(f.name): f for f in dataclasses.fields(StackConfig) if f.name not in _FIXED}
"""Every deepcloud: config key and the StackConfig field it fills."""
TRUE = ("true", "yes", "1")
"""The spellings of true (any case, surrounding blanks ignored); the trainer's hyperparameters take the same ones
(tests/contract/test_config_parsing.py)."""
FALSE = ("false", "no", "0")
"""The spellings of false."""


def parse_value(key: str, text: str, default: object) -> bool | int | str | tuple[str, ...]:
    """The value of `deepcloud:<key>` from Pulumi's string, of the type of the field's `default`."""
    where = f"{NAMESPACE}:{key}"
    stripped = text.strip()
    if isinstance(default, bool):
        if stripped.lower() in TRUE:
            return True
        if stripped.lower() in FALSE:
            return False
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if isinstance(default, int):
        # Digits with an optional minus, as the trainer reads its integers: int() alone would also take "+3" and
        # "1_000", spellings a hyperparameter of the same value would be refused for.
        if stripped.lstrip("-").isdigit():
            try:
                return int(stripped)
            except ValueError:  # "--3", or a digit int() does not read (superscripts)
                pass
        raise ConfigError(f"{where} must be a whole number, got {text!r}")
    if isinstance(default, tuple):
        return _parse_list(where, text)
    if not stripped:
        raise ConfigError(f"{where} is set but empty: remove it (pulumi config rm {where}) or give it a value")
    return stripped


def _parse_list(where: str, text: str) -> tuple[str, ...]:
    """A JSON list of strings, or comma-separated strings; blank items are dropped."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError:
            raise ConfigError(f"{where} is not a valid JSON list: {text!r}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where} must be a list of strings, got {text!r}")
    else:
        items = stripped.split(",")
    return tuple(i.strip() for i in items if i.strip())


def parse(values: Mapping[str, str], *, project: str, stack: str, region: str | None) -> StackConfig:
    """A StackConfig from `deepcloud:` values keyed without the namespace (strings, as Pulumi stores them)."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f" (did you mean {NAMESPACE}:{close[0]}?)" if close else ""
        raise ConfigError(
            f"{NAMESPACE}:{unknown[0]} is not a deepcloud setting{hint}; Pulumi.dev.yaml.example lists them all"
        )
    if not region:
        raise ConfigError("aws:region is not set: run `pulumi config set aws:region us-east-1` (or your region)")
    # Any: each value has its own field's type (parse_value follows the field's default), which a dict cannot say.
    parsed: dict[str, Any] = {KEYS[key].name: parse_value(key, text, KEYS[key].default) for key, text in values.items()}
    return StackConfig(project=project, stack=stack, region=region.strip(), **parsed)


def load() -> StackConfig:
    """Read the stack's configuration once from `pulumi.Config` (call it once, from __main__)."""
    from pulumi.runtime.config import CONFIG  # the engine's flat config map: the only way to see unknown keys

    settings = pulumi.Config(NAMESPACE)
    prefix = f"{NAMESPACE}:"
    present = [key.removeprefix(prefix) for key in CONFIG.get() if key.startswith(prefix)]
    values = {key: settings.get(key) for key in present}
    region = pulumi.Config("aws").get("region")
    return parse(
        {k: v for k, v in values.items() if v is not None},
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        region=region,
    )
