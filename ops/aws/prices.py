"""Hourly prices from ops/aws/prices.toml (with its date and source), and the cost arithmetic built on them.

The table and its loader are infra/prices.py's (`python -m infra.cli cost` reads the same file); `make prices`
refreshes it from the AWS Price List API (ops/aws/pricelist.py).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from infra import prices
from infra.prices import PRICE_FILE, Price
from ops.errors import OpsError

__all__ = ["KINDS", "MIN_RUNTIME_S", "PRICE_FILE", "Price", "PriceTable", "duration", "max_runtime_s", "usd"]
KINDS = ("ec2", "sagemaker_training", "sagemaker_hosting")
MIN_RUNTIME_S = 60
"""A training run shorter than this is not worth starting (and SageMaker bills a minute anyway)."""


class PriceTable(prices.PriceTable):
    """The price table, whose missing prices are ops' one-line errors."""

    @classmethod
    def load(cls, path: Path = PRICE_FILE) -> PriceTable:
        try:
            table = prices.PriceTable.load(path)
        except prices.PriceError as exc:
            raise OpsError(str(exc)) from None
        return cls(**{f.name: getattr(table, f.name) for f in dataclasses.fields(table)})

    def get(self, kind: str, instance_type: str) -> Price:
        try:
            return super().get(kind, instance_type)
        except prices.PriceError as exc:
            raise OpsError(str(exc)) from None

    def _name(self) -> str:
        return self.name


def max_runtime_s(usd_per_hour: float, max_hours: float, max_cost: float | None) -> int:
    """The longest a run may take: ``max_hours``, or less when ``max_cost`` dollars buy fewer hours."""
    if max_hours <= 0:
        raise OpsError(f"MAX_HOURS must be above 0, got {max_hours:g}")
    limit = max_hours * 3600
    if max_cost is not None:
        if max_cost <= 0:
            raise OpsError(f"MAX_COST must be above 0 dollars, got {max_cost:g}")
        limit = min(limit, max_cost / usd_per_hour * 3600)
        if limit < MIN_RUNTIME_S:
            raise OpsError(
                f"MAX_COST={max_cost:g} buys {limit:.0f} s at {usd(usd_per_hour)}/h, under a minute: raise MAX_COST"
            )
    return math.floor(limit)


def usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.1 else f"${amount:.3f}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
