"""The price table (ops/aws/prices.toml): what every cost deepcloud prints is computed from, with its source and date.

One loader for both rooms: `python -m infra.cli cost` prices the synthesized stack with it, and ops prices runs and
what is running (ops/aws/prices.py adds its one-line errors). `make prices` rewrites the file from the AWS Price List
API (ops/aws/pricelist.py); nothing here needs credentials or a network.

Sections:
    [ec2], [ec2_spot], [sagemaker_training], [sagemaker_hosting]   "<instance type>" = { usd_per_hour = ... }
    [sagemaker_serverless]                                         "<memory MB>" = { usd_per_second = ... }
    [rates], [rates_by_hand]                                       "<name>" = { usd = ..., unit = "..." }
    [sources.<section>]                                            as_of = "YYYY-MM-DD", source = "..."
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRICE_FILE = REPO / "ops" / "aws" / "prices.toml"
"""Kept in the repository, so nothing needs credentials to read a price."""
INSTANCE_SECTIONS = ("ec2", "ec2_spot", "sagemaker_training", "sagemaker_hosting")
RATE_SECTIONS = ("rates", "rates_by_hand")
"""[rates] are what `make prices` fetches (VPC endpoints, NAT, KMS); [rates_by_hand] the rest (storage, logs, alarms,
serverless data), transcribed from AWS's pricing pages with their source."""
SECTIONS = (*INSTANCE_SECTIONS, "sagemaker_serverless", *RATE_SECTIONS)
HOURS_PER_MONTH = 730
"""AWS's own month for per-month prices (its pricing pages and calculator count 730 hours)."""


class PriceError(LookupError):
    """A price the table does not have, or a table that cannot be read."""


@dataclass(frozen=True, slots=True)
class Price:
    instance_type: str
    usd_per_hour: float
    vcpus: int | None = None
    gpus: int | None = None


@dataclass(frozen=True, slots=True)
class Rate:
    name: str
    usd: float
    unit: str
    """What one `usd` buys: "AZ-hour", "GB-month", "key-month", "GB", ..."""
    section: str = "rates"


@dataclass(frozen=True, slots=True)
class Source:
    as_of: str
    source: str

    def __str__(self) -> str:
        return f"{self.source}, {self.as_of}"


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    region: str
    prices: dict[str, dict[str, Price]]
    serverless: dict[int, float] = field(default_factory=dict)
    """Memory MB -> USD per second of a serverless endpoint's compute."""
    rates: dict[str, Rate] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    path: Path = PRICE_FILE

    @classmethod
    def load(cls, path: Path = PRICE_FILE) -> PriceTable:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PriceError(f"cannot read the price table {path}: {exc}") from None
        try:
            prices = {
                kind: {
                    name: Price(name, float(entry["usd_per_hour"]), entry.get("vcpus"), entry.get("gpus"))
                    for name, entry in raw.get(kind, {}).items()
                }
                for kind in INSTANCE_SECTIONS
            }
            serverless = {
                int(mb): float(entry["usd_per_second"]) for mb, entry in raw.get("sagemaker_serverless", {}).items()
            }
            rates = {
                name: Rate(name, float(entry["usd"]), str(entry["unit"]), section)
                for section in RATE_SECTIONS
                for name, entry in raw.get(section, {}).items()
            }
            sources = {
                name: Source(str(entry["as_of"]), str(entry["source"]))
                for name, entry in raw.get("sources", {}).items()
            }
            return cls(
                as_of=str(raw["as_of"]),
                region=str(raw["region"]),
                prices=prices,
                serverless=serverless,
                rates=rates,
                sources=sources,
                path=path,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PriceError(
                f"the price table {path} is malformed ({type(exc).__name__}: {exc}): run `make prices` to rewrite it"
            ) from None

    def find(self, kind: str, instance_type: str) -> Price | None:
        return self.prices[kind].get(instance_type)

    def get(self, kind: str, instance_type: str) -> Price:
        price = self.find(kind, instance_type)
        if price is None:
            raise PriceError(
                f"no price for {instance_type} in [{kind}] of {self.name}: run `make prices` (or add it, "
                "with its source) so the cost can be shown and MAX_COST honoured"
            )
        return price

    def rate(self, name: str) -> Rate:
        if name not in self.rates:
            raise PriceError(f"no rate {name!r} in [rates] of {self.name}: run `make prices`")
        return self.rates[name]

    def serverless_per_second(self, memory_mb: int) -> float:
        if memory_mb not in self.serverless:
            raise PriceError(
                f"no serverless price for {memory_mb} MB in [sagemaker_serverless] of {self.name}: run `make prices`"
            )
        return self.serverless[memory_mb]

    def source(self, section: str) -> Source:
        """Where the prices of `section` come from and when they were read."""
        return self.sources.get(section, Source(self.as_of, "unknown source"))

    def note(self, region: str) -> str:
        """Where the numbers come from, said next to every cost ops prints."""
        where = "" if region == self.region else f"; the stack is in {region}, where prices differ"
        return f"{self.region} on-demand list prices as of {self.as_of} ({self.name}{where})"

    @property
    def name(self) -> str:
        try:
            return str(self.path.relative_to(REPO))
        except ValueError:
            return str(self.path)
