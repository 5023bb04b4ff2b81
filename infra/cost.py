"""What a stack costs, from the resources the Pulumi program declares and the price table, before anything exists.

`python -m infra.cli cost` (and the first lines of `preview` and `up`) runs the program under Pulumi's mocks for the
stack's config (infra/synth.py), then prices each registered resource here: idle (what bills with nothing running,
every scalable thing at its minimum) and running (everything at its configured maximum: the GPU group full, the
endpoint at endpointMaxInstances, a serverless endpoint busy on every concurrent slot). Each line names the price
table section it comes from, with its source and date. The AWS behaviours behind each rule (what bills per hour, what
per request, which alarms AWS creates for you) are rows C3-C8 of docs/aws-behaviours.md.

Storage bills by what is stored, which no program declares: it is priced at the assumptions in `STORED_GB`, printed
with the figures. Requests (KMS calls, log ingestion, data through endpoints, serverless invocations) bill by use and
are priced as "per use" lines, not in the totals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.prices import HOURS_PER_MONTH, PriceTable
from infra.synth import Registered

STORED_GB = {"s3": 2.0, "ecr": 6.0, "logs": 0.5}
"""Assumed storage while idle, GB: S3 (training data, models, checkpoints, access logs), ECR (one CUDA trainer image of
about 5 GB and one CPU serving image of about 1 GB; the lifecycle policy keeps more as they are pushed), CloudWatch
Logs (retained run and endpoint logs). Printed beside the totals: storage is priced, not measured."""
ALARMS_PER_TARGET_TRACKING = 2
"""A target tracking policy's CloudWatch alarms (one to scale out, one to scale in), which Application Auto Scaling and
ECS managed scaling create in the account and which bill as standard alarms (docs/aws-behaviours.md C5)."""


@dataclass(frozen=True, slots=True)
class Line:
    component: str
    item: str
    idle_usd_h: float
    running_usd_h: float
    section: str
    """The price table section the figure comes from ("rates", "sagemaker_hosting", ...); "" for what costs nothing."""

    @property
    def idle_usd_month(self) -> float:
        return self.idle_usd_h * HOURS_PER_MONTH


@dataclass
class Bill:
    lines: list[Line] = field(default_factory=list)
    per_use: list[Line] = field(default_factory=list)
    """Priced per request or per GB, not per hour: listed, not summed (item holds the rate)."""
    notes: list[str] = field(default_factory=list)

    @property
    def idle_usd_h(self) -> float:
        return sum(line.idle_usd_h for line in self.lines)

    @property
    def running_usd_h(self) -> float:
        return sum(line.running_usd_h for line in self.lines)

    def idle_by(self, kinds: Iterable[str]) -> float:
        """Idle USD per hour of the lines of `kinds` (compute, network, other)."""
        wanted = set(kinds)
        return sum(line.idle_usd_h for line in self.lines if _kind(line) in wanted)


def _kind(line: Line) -> str:
    """compute, network, or other (keys, alarms, storage): for the goal figures."""
    if line.section in ("sagemaker_hosting", "sagemaker_serverless", "ec2", "sagemaker_training"):
        return "compute"
    if line.component == "Network" or line.item.startswith("NAT gateway"):
        return "network"
    return "other"


def _component_names(resources: Sequence[Registered]) -> dict[str, str]:
    """URN -> the name of the deepcloud component it belongs to (its nearest ancestor of type deepcloud:index:*)."""
    by_urn = {r.urn: r for r in resources}

    def owner(r: Registered) -> str:
        seen: Registered | None = r
        while seen is not None:
            if seen.type.startswith("deepcloud:index:"):
                return seen.type.removeprefix("deepcloud:index:")
            seen = by_urn.get(seen.parent)
        return "stack"

    return {r.urn: owner(r) for r in resources}


def price(resources: Sequence[Registered], prices: PriceTable, outputs: dict[str, Any] | None = None) -> Bill:
    """The bill of the synthesized stack: one line per thing that bills by the hour or month. `outputs` (the stack
    outputs) tell an on-demand network whose interface endpoints are down: they bill while a run needs them."""
    pricing = _Pricing(prices, _component_names(resources), resources)
    outputs = outputs or {}
    if outputs.get("network_profile") == "on-demand" and not outputs.get("interface_endpoints_up"):
        pricing.on_demand_endpoints(len(outputs.get("subnet_ids") or []))
    for r in resources:
        step = _BY_TYPE.get(r.type)
        if step is not None:
            step(pricing, r)
    bill = pricing.bill
    if any(line.item.startswith("interface endpoint") for line in bill.lines):
        bill.per_use.append(
            Line(
                "Network",
                f"data through interface endpoints ${prices.rate('vpc_endpoint_data').usd:g} per GB",
                0,
                0,
                "rates",
            )
        )
    bill.notes.append(
        "not counted: ECS Container Insights metrics (billed per metric while the cluster reports them), "
        "Lambda and EventBridge (per invocation, within the free tier for this stack's few events)"
    )
    return bill


class _Pricing:
    """The bill being written, and how a resource's line is added to it (under the component that owns it)."""

    def __init__(self, prices: PriceTable, owners: dict[str, str], resources: Sequence[Registered]) -> None:
        self.prices = prices
        self.owners = owners
        self.bill = Bill()
        self.targets = {
            str(r.inputs.get("resourceId")): r for r in resources if r.type == "aws:appautoscaling/target:Target"
        }
        """Scalable targets by resource id (endpoint/<name>/variant/<variant>), for the endpoints' instance bounds."""
        self.endpoints = {
            dep: r
            for r in resources
            if r.type == "aws:sagemaker/endpoint:Endpoint"
            for dep in r.property_dependencies.get("endpointConfigName", [])
        }
        """Endpoints by the URN of the endpoint configuration they serve."""

    def add(self, r: Registered, item: str, idle: float, running: float, section: str) -> None:
        self.bill.lines.append(Line(self.owners[r.urn], item, idle, running, section))

    def rated(self, r: Registered, item: str, name: str, quantity: float, per_hour: bool = False) -> None:
        """A line of `quantity` x the rate `name` (a monthly rate unless `per_hour`), from the rate's own section."""
        rate = self.prices.rate(name)
        hourly = quantity * rate.usd * (1 if per_hour else 1 / HOURS_PER_MONTH)
        self.add(r, item, hourly, hourly, rate.section)

    def per_use(self, r: Registered, item: str, section: str) -> None:
        self.bill.per_use.append(Line(self.owners[r.urn], item, 0, 0, section))

    def on_demand_endpoints(self, zones: int) -> None:
        """An on-demand network's interface endpoints, absent now: nothing idle, billed while a run needs them."""
        from infra.components.network import INTERFACE_ENDPOINTS

        self.bill.lines.append(
            Line(
                "Network",
                f"{len(INTERFACE_ENDPOINTS)} interface endpoints x {zones} zones, only "
                "while a run needs them (on-demand)",
                0.0,
                len(INTERFACE_ENDPOINTS) * zones * self.prices.rate("vpc_interface_endpoint").usd,
                "rates",
            )
        )


def _key(p: _Pricing, r: Registered) -> None:
    p.rated(r, "KMS customer managed key", "kms_key", 1)
    p.per_use(r, f"KMS requests ${p.prices.rate('kms_requests').usd:g} per 10k", "rates")


def _alarm(p: _Pricing, r: Registered) -> None:
    p.rated(r, f"alarm {r.name}", "cloudwatch_alarm", 1)


def _scaling_policy(p: _Pricing, r: Registered) -> None:
    if r.inputs.get("policyType") == "TargetTrackingScaling":
        item = f"{ALARMS_PER_TARGET_TRACKING} alarms of target tracking {r.name}"
        p.rated(r, item, "cloudwatch_alarm", ALARMS_PER_TARGET_TRACKING)


def _capacity_provider(p: _Pricing, r: Registered) -> None:
    managed = (r.inputs.get("autoScalingGroupProvider") or {}).get("managedScaling") or {}
    if managed.get("status") == "ENABLED":
        item = f"{ALARMS_PER_TARGET_TRACKING} alarms of ECS managed scaling"
        p.rated(r, item, "cloudwatch_alarm", ALARMS_PER_TARGET_TRACKING)


def _vpc_endpoint(p: _Pricing, r: Registered) -> None:
    name = str(r.inputs.get("serviceName", ""))
    gateway = r.inputs.get("vpcEndpointType") == "Gateway"
    service = name.rsplit(".", 1)[-1] if gateway else ".".join(name.split(".")[3:])
    if r.inputs.get("vpcEndpointType") == "Interface":
        zones = len(r.inputs.get("subnetIds") or [])
        p.rated(r, f"interface endpoint {service} x {zones} zones", "vpc_interface_endpoint", zones, per_hour=True)
    else:
        p.add(r, f"gateway endpoint {service} (free)", 0, 0, "")


def _nat_gateway(p: _Pricing, r: Registered) -> None:
    p.rated(r, "NAT gateway", "nat_gateway", 1, per_hour=True)


def _gpu_group(p: _Pricing, r: Registered) -> None:
    overrides = ((r.inputs.get("mixedInstancesPolicy") or {}).get("launchTemplate") or {}).get("overrides", [])
    types = [o["instanceType"] for o in overrides if "instanceType" in o]
    dearest = max((p.prices.get("ec2", t).usd_per_hour, t) for t in types)
    low, high = int(r.inputs.get("minSize", 0)), int(r.inputs.get("maxSize", 0))
    item = f"GPU instances {low}..{high} x {dearest[1]} (dearest type, on-demand; spot costs less)"
    p.add(r, item, low * dearest[0], high * dearest[0], "ec2")


def _endpoint_config(p: _Pricing, r: Registered) -> None:
    _price_endpoint(r, p.endpoints.get(r.urn), p.targets, p.prices, p.bill, p.owners[r.urn])


def _bucket(p: _Pricing, r: Registered) -> None:
    if r.name.endswith("-data"):  # one line for all buckets: storage is assumed, not per bucket
        p.rated(r, f"S3 storage, {STORED_GB['s3']:g} GB assumed (all buckets)", "s3_standard", STORED_GB["s3"])


def _repository(p: _Pricing, r: Registered) -> None:
    if r.name.endswith("-trainer"):  # one line for both repositories
        item = f"ECR storage, {STORED_GB['ecr']:g} GB assumed (both repositories)"
        p.rated(r, item, "ecr_storage", STORED_GB["ecr"])


def _log_group(p: _Pricing, r: Registered) -> None:
    if r.name.startswith("training-"):  # one line for all groups
        item = f"CloudWatch Logs storage, {STORED_GB['logs']:g} GB assumed (all groups)"
        p.rated(r, item, "logs_storage", STORED_GB["logs"])
        ingestion = p.prices.rate("logs_ingestion")
        p.per_use(r, f"log ingestion ${ingestion.usd:g} per GB", ingestion.section)


def _budget(p: _Pricing, r: Registered) -> None:
    p.bill.notes.append("the budget has no actions: AWS Budgets bills action-enabled budgets only")


_BY_TYPE: dict[str, Callable[[_Pricing, Registered], None]] = {
    "aws:kms/key:Key": _key,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _alarm,
    "aws:appautoscaling/policy:Policy": _scaling_policy,
    "aws:ecs/capacityProvider:CapacityProvider": _capacity_provider,
    "aws:ec2/vpcEndpoint:VpcEndpoint": _vpc_endpoint,
    "aws:ec2/natGateway:NatGateway": _nat_gateway,
    "aws:autoscaling/group:Group": _gpu_group,
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": _endpoint_config,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:ecr/repository:Repository": _repository,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:budgets/budget:Budget": _budget,
}
"""How each priced resource type adds to the bill; a type not here costs nothing by the hour."""


def _price_endpoint(
    config: Registered,
    endpoint: Registered | None,
    targets: dict[str, Registered],
    prices: PriceTable,
    bill: Bill,
    component: str,
) -> None:
    name = endpoint.inputs.get("name") if endpoint else None
    for variant in config.inputs.get("productionVariants") or []:
        serverless = variant.get("serverlessConfig")
        if serverless:
            memory, slots = int(serverless["memorySizeInMb"]), int(serverless["maxConcurrency"])
            per_second = prices.serverless_per_second(memory)
            bill.lines.append(
                Line(
                    component,
                    f"serverless {memory} MB: $0 idle; at most {slots} invocations at once all hour",
                    0.0,
                    per_second * 3600 * slots,
                    "sagemaker_serverless",
                )
            )
            bill.per_use.append(
                Line(
                    component,
                    f"serverless compute ${per_second:.7f} per second of each "
                    f"invocation, data ${prices.rate('sagemaker_serverless_data').usd:g}"
                    " per GB",
                    0,
                    0,
                    "sagemaker_serverless",
                )
            )
            continue
        kind = variant["instanceType"]
        hourly = prices.get("sagemaker_hosting", kind).usd_per_hour
        target = targets.get(f"endpoint/{name}/variant/{variant['variantName']}")
        low = int(target.inputs["minCapacity"]) if target else int(variant.get("initialInstanceCount", 1))
        high = int(target.inputs["maxCapacity"]) if target else low
        mode = "async, scales to zero" if config.inputs.get("asyncInferenceConfig") else "real-time"
        bill.lines.append(
            Line(
                component, f"endpoint {low}..{high} x {kind} ({mode})", low * hourly, high * hourly, "sagemaker_hosting"
            )
        )
    if endpoint and (endpoint.inputs.get("deploymentConfig") or {}).get("blueGreenUpdatePolicy"):
        bill.notes.append(
            "a blue/green rollout runs the new endpoint fleet beside the old one while it bakes "
            "(twice the instances, for bakeSeconds per step)"
        )


def render(bill: Bill, prices: PriceTable, title: str, region: str) -> list[str]:
    """The bill as printed: a table by component, the totals, then where each price comes from."""
    rows = [("component", "item", "idle $/h", "idle $/month", "running $/h", "prices")]
    for line in sorted(bill.lines, key=lambda line: (line.component, -line.idle_usd_h, line.item)):
        rows.append(
            (
                line.component,
                line.item,
                f"{line.idle_usd_h:.4f}",
                f"{line.idle_usd_month:.2f}",
                f"{line.running_usd_h:.4f}",
                line.section or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [f"==> cost: {title}"]
    out += [
        "  ".join(
            cell.ljust(width) if i < 2 or i == 5 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    compute, network = bill.idle_by(["compute"]), bill.idle_by(["network"])
    out.append(
        f"idle      ${bill.idle_usd_h:.4f}/h = ${bill.idle_usd_h * HOURS_PER_MONTH:.2f} a month "
        f"(compute ${compute:.4f}/h, network ${network:.4f}/h, keys, alarms and storage the rest)"
    )
    out.append(f"running   at most ${bill.running_usd_h:.4f}/h with everything at its maximum")
    for line in bill.per_use:
        out.append(f"per use   {line.component}: {line.item}")
    for note in bill.notes:
        out.append(f"note      {note}")
    where = "" if region == prices.region else f"; the stack is in {region}, where prices differ"
    out.append(
        f"prices    {prices.region} list prices from {prices.name}{where}; a month is {HOURS_PER_MONTH} h; "
        f"storage assumed {', '.join(f'{k} {v:g} GB' for k, v in STORED_GB.items())}"
    )
    used = sorted({line.section for line in [*bill.lines, *bill.per_use] if line.section})
    for section in used:
        out.append(f"          [{section}] {prices.source(section)}")
    return out
