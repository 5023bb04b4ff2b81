"""Hourly prices from ops/aws/prices.toml (with its date and source), and the cost arithmetic built on them."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ops.errors import OpsError

PRICE_FILE = Path(__file__).with_name("prices.toml")
KINDS = ("ec2", "sagemaker_training", "sagemaker_hosting")
MIN_RUNTIME_S = 60
"""A training run shorter than this is not worth starting (and SageMaker bills a minute anyway)."""


@dataclass(frozen=True, slots=True)
class Price:
    instance_type: str
    usd_per_hour: float
    vcpus: int | None = None
    gpus: int | None = None


@dataclass(frozen=True, slots=True)
class PriceTable:
    as_of: str
    region: str
    prices: dict[str, dict[str, Price]]
    path: Path = PRICE_FILE

    @classmethod
    def load(cls, path: Path = PRICE_FILE) -> PriceTable:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise OpsError(f"cannot read the price table {path}: {exc}") from None
        prices = {kind: {name: Price(name, float(entry["usd_per_hour"]), entry.get("vcpus"), entry.get("gpus"))
                         for name, entry in raw.get(kind, {}).items()} for kind in KINDS}
        return cls(as_of=str(raw["as_of"]), region=str(raw["region"]), prices=prices, path=path)

    def find(self, kind: str, instance_type: str) -> Price | None:
        return self.prices[kind].get(instance_type)

    def get(self, kind: str, instance_type: str) -> Price:
        price = self.find(kind, instance_type)
        if price is None:
            raise OpsError(f"no price for {instance_type} in [{kind}] of {self._name()}: add it (with its source) "
                           "so the cost can be shown and MAX_COST honoured")
        return price

    def note(self, region: str) -> str:
        """Where the numbers come from, said next to every cost ops prints."""
        where = "" if region == self.region else f"; the stack is in {region}, where prices differ"
        return f"{self.region} on-demand list prices as of {self.as_of} ({self._name()}{where})"

    def _name(self) -> str:
        try:
            return str(self.path.relative_to(Path(__file__).resolve().parent.parent.parent))
        except ValueError:
            return str(self.path)


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
            raise OpsError(f"MAX_COST={max_cost:g} buys {limit:.0f} s at {usd(usd_per_hour)}/h, under a minute: "
                           "raise MAX_COST")
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
