"""`make prices`: rewrite ops/aws/prices.toml from AWS's own prices, for the stack's region and instance types.

    python -m ops.aws.pricelist [--stack NAME] [--region REGION]

What it reads, each section then stamped with its source and today's date:

- [ec2]: EC2 on-demand, Linux, shared tenancy (`pricing:GetProducts`, service AmazonEC2), with vCPUs and GPUs.
- [ec2_spot]: the highest Linux/UNIX spot price any zone asked in the last 7 days (`ec2:DescribeSpotPriceHistory`:
  spot prices are not in the Price List).
- [sagemaker_training], [sagemaker_hosting]: SageMaker instance-hours (AmazonSageMaker, usage types `…Train:` and
  `…Host:`); [sagemaker_serverless]: serverless inference per second by memory size (`…ServerlessInf…Mem-<n>GB`).
- [rates]: interface VPC endpoints per AZ-hour and per GB (AmazonVPC), NAT gateways (AmazonEC2 `NAT Gateway`), KMS
  keys and requests (awskms).

[rates_by_hand] (storage, logs, alarms) is kept as it is, with its own source. The instance types are those of the
stack config (Pulumi.<stack>.yaml, or infra's defaults) and those already in the table. The Price List API answers in
us-east-1 (and a few other regions) for every region; its GetProducts response is one JSON document per product:
`product.attributes` and `terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit.USD` (botocore's pricing
example; docs/aws-behaviours.md C9-C10). Needs AWS credentials allowed `pricing:GetProducts` and
`ec2:DescribeSpotPriceHistory`; a missing product keeps the table's price and says so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra import prices as table_module
from infra.prices import PRICE_FILE, PriceTable
from ops.aws.console import say
from ops.aws.training.base import DEFAULT_INSTANCE_TYPE
from ops.errors import OpsError

PRICING_REGION = "us-east-1"
"""Where the Price List API answers (it serves every region's prices)."""
SPOT_DAYS = 7
SOURCES = {
    "ec2": "AWS Price List API, pricing:GetProducts AmazonEC2 (on-demand, Linux, shared tenancy)",
    "ec2_spot": f"EC2 DescribeSpotPriceHistory, Linux/UNIX, highest in any zone over {SPOT_DAYS} days",
    "sagemaker_training": "AWS Price List API, pricing:GetProducts AmazonSageMaker (Train usage types)",
    "sagemaker_hosting": "AWS Price List API, pricing:GetProducts AmazonSageMaker (Host usage types)",
    "sagemaker_serverless": "AWS Price List API, pricing:GetProducts AmazonSageMaker (ServerlessInf usage types)",
    "rates": "AWS Price List API, pricing:GetProducts AmazonVPC (VpcEndpoint), AmazonEC2 (NAT Gateway), awskms",
}


def term_match(**fields: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": key, "Value": value} for key, value in fields.items()]


def products(pricing: Any, service: str, filters: list[dict[str, str]]) -> list[dict]:
    """Every product document GetProducts returns for `service` and `filters` (all pages), parsed."""
    found: list[dict] = []
    token = None
    while True:
        request = {"ServiceCode": service, "Filters": filters, "FormatVersion": "aws_v1"}
        if token:
            request["NextToken"] = token
        page = pricing.get_products(**request)
        found += [json.loads(item) for item in page.get("PriceList", [])]
        token = page.get("NextToken")
        if not token:
            return found


def on_demand_usd(product: dict) -> tuple[float, str] | None:
    """(USD per unit, unit) of a product's first on-demand price dimension that starts at 0 (the first tier)."""
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            if str(dimension.get("beginRange", "0")) in ("0", "0.0"):
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None:
                    return float(usd), str(dimension.get("unit", ""))
    return None


def _usage(product: dict) -> str:
    return str(product.get("product", {}).get("attributes", {}).get("usagetype", ""))


def _usage_ends(suffix: str) -> Callable[[dict], bool]:
    """Whether a product's usage type ends with ``suffix`` (a function of its own, so each loop turn keeps its own)."""
    return lambda product: _usage(product).endswith(suffix)


def _first(found: Iterable[dict], keep: Callable[[dict], bool]) -> tuple[dict, float] | None:
    for product in found:
        priced = on_demand_usd(product)
        if keep(product) and priced is not None and priced[0] > 0:
            return product, priced[0]
    return None


class Refresh:
    """One refresh of the table: what was fetched, and what was kept because AWS had no product for it."""

    def __init__(self, pricing: Any, ec2: Any, region: str, now: datetime) -> None:
        self.pricing, self.ec2, self.region, self.now = pricing, ec2, region, now
        self.kept: list[str] = []

    def ec2_on_demand(self, instance_type: str) -> dict | None:
        found = products(
            self.pricing,
            "AmazonEC2",
            term_match(
                regionCode=self.region,
                instanceType=instance_type,
                operatingSystem="Linux",
                tenancy="Shared",
                preInstalledSw="NA",
                capacitystatus="Used",
            ),
        )
        pattern = re.compile(rf"(^|-)BoxUsage:{re.escape(instance_type)}$")  # not HostBoxUsage, DedicatedUsage, ...
        hit = _first(found, lambda p: bool(pattern.search(_usage(p))))
        if hit is None:
            return None
        attributes = hit[0]["product"]["attributes"]
        entry: dict[str, Any] = {"usd_per_hour": hit[1]}
        for key, name in (("vcpu", "vcpus"), ("gpu", "gpus")):
            if str(attributes.get(key, "")).isdigit():
                entry[name] = int(attributes[key])
        return entry

    def ec2_spot(self, instance_type: str) -> dict | None:
        highest = None
        token = None
        while True:
            request: dict[str, Any] = {
                "InstanceTypes": [instance_type],
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": self.now - timedelta(days=SPOT_DAYS),
                "EndTime": self.now,
            }
            if token:
                request["NextToken"] = token
            page = self.ec2.describe_spot_price_history(**request)
            for point in page.get("SpotPriceHistory", []):
                value = float(point["SpotPrice"])
                highest = value if highest is None else max(highest, value)
            token = page.get("NextToken")
            if not token:
                break
        return None if highest is None else {"usd_per_hour": highest}

    def sagemaker(self, instance_type: str, usage: str) -> dict | None:
        """`usage` is Host or Train: the instance-hour product of that use (on-demand, not spot)."""
        found = products(
            self.pricing, "AmazonSageMaker", term_match(regionCode=self.region, instanceName=instance_type)
        )
        pattern = re.compile(rf"(^|-){usage}:{re.escape(instance_type)}$")
        hit = _first(found, lambda p: bool(pattern.search(_usage(p))))
        return None if hit is None else {"usd_per_hour": hit[1]}

    def serverless(self) -> dict[str, dict]:
        found = products(
            self.pricing,
            "AmazonSageMaker",
            [*term_match(regionCode=self.region), {"Type": "CONTAINS", "Field": "usagetype", "Value": "ServerlessInf"}],
        )
        table: dict[str, dict] = {}
        for product in found:
            match = re.search(r"ServerlessInf.*Mem-(\d+)GB$", _usage(product))
            priced = on_demand_usd(product)
            if match and priced is not None and priced[0] > 0:
                table[str(int(match.group(1)) * 1024)] = {"usd_per_second": priced[0]}
        return table

    def rates(self) -> dict[str, dict]:
        endpoint, nat = {"productFamily": "VpcEndpoint"}, {"productFamily": "NAT Gateway"}
        wanted = [
            ("vpc_interface_endpoint", "AZ-hour", "AmazonVPC", endpoint, "VpcEndpoint-Hours", 1),
            ("vpc_endpoint_data", "GB", "AmazonVPC", endpoint, "VpcEndpoint-Bytes", 1),
            ("nat_gateway", "hour", "AmazonEC2", nat, "NatGateway-Hours", 1),
            ("nat_gateway_data", "GB", "AmazonEC2", nat, "NatGateway-Bytes", 1),
            ("kms_key", "key-month", "awskms", {}, "KMS-Keys", 1),
            ("kms_requests", "10k requests", "awskms", {}, "KMS-Requests", 10_000),
        ]
        cache: dict[tuple[str, str], list[dict]] = {}
        out: dict[str, dict] = {}
        for name, unit, service, fields, suffix, per in wanted:
            key = (service, json.dumps(fields, sort_keys=True))
            if key not in cache:
                cache[key] = products(self.pricing, service, term_match(regionCode=self.region, **fields))
            hit = _first(cache[key], _usage_ends(suffix))
            if hit is None:
                self.kept.append(f"[rates] {name}")
                continue
            out[name] = {"usd": round(hit[1] * per, 10), "unit": unit}
        return out


def refresh(
    pricing: Any,
    ec2: Any,
    region: str,
    instance_types: Mapping[str, Iterable[str]],
    old: PriceTable,
    now: datetime | None = None,
) -> tuple[dict, list[str]]:
    """The new table (as a dict ready to write) and what was kept from `old` because AWS had no product for it.
    `instance_types`: section -> types (ec2 types also get [ec2_spot])."""
    now = now or datetime.now(UTC)
    run = Refresh(pricing, ec2, region, now)
    today = now.date().isoformat()
    raw = _as_dict(old)
    raw.update(region=region, currency="USD")
    fetchers = {
        "ec2": run.ec2_on_demand,
        "ec2_spot": run.ec2_spot,
        "sagemaker_training": lambda t: run.sagemaker(t, "Train"),
        "sagemaker_hosting": lambda t: run.sagemaker(t, "Host"),
    }
    for section, fetch in fetchers.items():
        types = sorted(set(instance_types.get("ec2" if section == "ec2_spot" else section, ())))
        fresh: dict[str, dict] = {}
        for kind in types:
            entry = fetch(kind)
            if entry is None:
                if kind in raw.get(section, {}):
                    fresh[kind] = raw[section][kind]
                run.kept.append(f"[{section}] {kind}")
            else:
                fresh[kind] = entry
        raw[section] = fresh
        raw["sources"][section] = {"as_of": today, "source": SOURCES[section] + f", {region}"}
    serverless = run.serverless()
    if serverless:
        raw["sagemaker_serverless"] = serverless
        raw["sources"]["sagemaker_serverless"] = {
            "as_of": today,
            "source": SOURCES["sagemaker_serverless"] + f", {region}",
        }
    else:
        run.kept.append("[sagemaker_serverless]")
    raw["rates"] = {**raw.get("rates", {}), **run.rates()}
    raw["sources"]["rates"] = {"as_of": today, "source": SOURCES["rates"] + f", {region}"}
    raw["as_of"] = min(entry["as_of"] for entry in raw["sources"].values())
    return raw, run.kept


def _as_dict(table: PriceTable) -> dict:
    """The loaded table back as the TOML document's structure."""
    raw: dict[str, Any] = {"as_of": table.as_of, "region": table.region, "currency": "USD"}
    for section, entries in table.prices.items():
        raw[section] = {
            name: {
                k: v
                for k, v in (("usd_per_hour", p.usd_per_hour), ("vcpus", p.vcpus), ("gpus", p.gpus))
                if v is not None
            }
            for name, p in entries.items()
        }
    raw["sagemaker_serverless"] = {str(mb): {"usd_per_second": usd} for mb, usd in table.serverless.items()}
    for section in table_module.RATE_SECTIONS:
        raw[section] = {r.name: {"usd": r.usd, "unit": r.unit} for r in table.rates.values() if r.section == section}
    raw["sources"] = {name: {"as_of": s.as_of, "source": s.source} for name, s in table.sources.items()}
    return raw


def _value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def dumps(raw: dict) -> str:
    """The table as TOML (the subset it uses: scalars at the top, [sources.<x>] tables, inline tables per entry)."""
    out = [
        "# The prices every cost deepcloud prints is computed from (infra/prices.py loads it).",
        "# Written by `make prices` (ops/aws/pricelist.py): each section's source and date are under [sources].",
        "# These are estimates, not a bill; spot costs less than [ec2], which is a ceiling for it.",
        "",
    ]
    out += [f"{key} = {_value(raw[key])}" for key in ("as_of", "region", "currency")]
    for name, source in sorted(raw["sources"].items()):
        out += ["", f"[sources.{name}]", f"as_of = {_value(source['as_of'])}", f"source = {_value(source['source'])}"]
    for section in table_module.SECTIONS:
        out += ["", f"[{section}]"]
        for key, entry in raw.get(section, {}).items():
            fields = ", ".join(f"{k} = {_value(v)}" for k, v in entry.items())
            out.append(f"{json.dumps(key)} = {{ {fields} }}")
    return "\n".join(out) + "\n"


def wanted_types(stack: str, old: PriceTable) -> dict[str, set[str]]:
    """The stack config's instance types and those already in the table, by section."""
    from infra.cli import stack_values
    from infra.config import ConfigError, parse

    values, region, _ = stack_values(stack, [])
    try:
        cfg = parse(values, project="deepcloud", stack=stack, region=region)
    except ConfigError as exc:
        raise OpsError(f"Pulumi.{stack}.yaml: {exc}") from None
    types = {section: set(entries) for section, entries in old.prices.items() if section != "ec2_spot"}
    types["ec2"] |= set(cfg.gpu_instance_types)
    types["sagemaker_hosting"].add(cfg.endpoint_instance_type)
    types["sagemaker_training"].add(DEFAULT_INSTANCE_TYPE)
    return types


def main(argv: list[str] | None = None) -> int:
    from ops.aws.clients import Aws, describe

    parser = argparse.ArgumentParser(prog="python -m ops.aws.pricelist", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default=None, help="whose config names the instance types (default $STACK or dev)")
    parser.add_argument("--region", default=None, help="region to price (default: the stack config's aws:region)")
    parser.add_argument("--output", type=Path, default=PRICE_FILE, help="where to write (default ops/aws/prices.toml)")
    args = parser.parse_args(argv)
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        from infra.cli import selected_stack, stack_values

        stack = args.stack or selected_stack()
        old = PriceTable.load(args.output if args.output.exists() else PRICE_FILE)
        region = args.region or stack_values(stack, [])[1]
        types = wanted_types(stack, old)
        try:
            raw, kept = refresh(Aws(PRICING_REGION).client("pricing"), Aws(region).client("ec2"), region, types, old)
        except (BotoCoreError, ClientError) as exc:
            raise OpsError(describe(exc)) from None
        args.output.write_text(dumps(raw))
        PriceTable.load(args.output)  # what was written reads back
    except (OpsError, table_module.PriceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say(f"==> prices: {args.output} for {region} as of {raw['as_of']}")
    for what in kept:
        say(f"kept         {what}: AWS returned no product for it; the table's earlier price (if any) stays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
