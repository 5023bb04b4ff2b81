"""The hyperparameters every target hands the trainer: ``HP=``'s ``name=value`` words over the dataset's defaults.

All values stay strings, as SageMaker writes them to ``hyperparameters.json``; the trainer checks them.
"""

from __future__ import annotations

from ops.data import dataset_named
from ops.errors import OpsError


def parse(items: list[str]) -> dict[str, str]:
    """``["epochs=10", "lr=0.002"]`` -> ``{"epochs": "10", "lr": "0.002"}`` (strings, as SageMaker sends)."""
    parsed: dict[str, str] = {}
    for item in items:
        for token in item.split():
            name, sep, value = token.partition("=")
            if not sep or not name:
                raise OpsError(f'hyperparameter {token!r} is not name=value: write e.g. HP="epochs=10 lr=0.002"')
            parsed[name] = value
    return parsed


def with_defaults(name: str, given: dict[str, str]) -> dict[str, str]:
    """``HP=``'s hyperparameters over dataset ``name``'s defaults, saying which defaults it took (every target)."""
    defaults = {k: v for k, v in dataset_named(name).hyperparameters.items() if k not in given}
    if defaults:
        print(
            f"defaults for DATASET={name}: "
            + " ".join(f"{k}={v}" for k, v in defaults.items())
            + " (HP= overrides them)",
            flush=True,
        )
    return {**defaults, **given}


def resolve(dataset: str, items: list[str]) -> dict[str, str]:
    """What `make train` sends for ``DATASET=dataset HP="items"``: parsed, then over the dataset's defaults."""
    return with_defaults(dataset, parse(items))
