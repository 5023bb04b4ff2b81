"""The stack's GPU capacity, read from AWS: capacity provider -> Auto Scaling group -> instance types, the
on-demand/spot split and the instances running now."""

from __future__ import annotations

from dataclasses import dataclass

from ops.aws.clients import Aws
from ops.aws.prices import PriceTable
from ops.errors import OpsError


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    instance_type: str
    state: str
    """The group's LifecycleState: Pending, InService, Terminating, ..."""


@dataclass(frozen=True, slots=True)
class Capacity:
    asg_name: str
    instance_types: tuple[str, ...]
    max_size: int
    on_demand_base: int
    on_demand_percent: int
    instances: tuple[Instance, ...]

    @property
    def uses_spot(self) -> bool:
        return self.on_demand_percent < 100 and self.max_size > self.on_demand_base

    @property
    def uses_on_demand(self) -> bool:
        return self.on_demand_base > 0 or self.on_demand_percent > 0

    @property
    def purchase(self) -> str:
        if self.uses_spot and self.uses_on_demand:
            return f"spot, on-demand base {self.on_demand_base} + {self.on_demand_percent}% above"
        return "spot" if self.uses_spot else "on-demand"

    def worst_hourly(self, prices: PriceTable) -> tuple[str, float]:
        """The dearest configured type and its on-demand price: what one task can cost per hour at most."""
        priced = [(prices.get("ec2", t).usd_per_hour, t) for t in self.instance_types]
        usd, kind = max(priced)
        return kind, usd


def describe(aws: Aws, capacity_provider: str) -> Capacity:
    ecs = aws.client("ecs")
    found = ecs.describe_capacity_providers(capacityProviders=[capacity_provider]).get("capacityProviders", [])
    if not found or found[0].get("status") == "INACTIVE":
        raise OpsError(f"ECS capacity provider {capacity_provider} does not exist: run `pulumi up`")
    asg_arn = found[0].get("autoScalingGroupProvider", {}).get("autoScalingGroupArn", "")
    asg_name = asg_arn.split("autoScalingGroupName/", 1)[-1]
    groups = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])
    if not groups.get("AutoScalingGroups"):
        raise OpsError(
            f"the Auto Scaling group {asg_name} of capacity provider {capacity_provider} does not exist: "
            "run `pulumi up`"
        )
    group = groups["AutoScalingGroups"][0]
    mixed = group.get("MixedInstancesPolicy", {})
    overrides = mixed.get("LaunchTemplate", {}).get("Overrides", [])
    types = tuple(o["InstanceType"] for o in overrides if "InstanceType" in o)
    if not types:
        raise OpsError(
            f"the Auto Scaling group {asg_name} names no instance types in a mixed instances policy: "
            "run `pulumi up` with the current infra/ program"
        )
    dist = mixed.get("InstancesDistribution", {})
    instances = tuple(
        Instance(i["InstanceId"], i.get("InstanceType", "?"), i.get("LifecycleState", ""))
        for i in group.get("Instances", [])
    )
    return Capacity(
        asg_name=asg_name,
        instance_types=types,
        max_size=int(group.get("MaxSize", 0)),
        on_demand_base=int(dist.get("OnDemandBaseCapacity", 0)),
        on_demand_percent=int(dist.get("OnDemandPercentageAboveBaseCapacity", 100)),
        instances=instances,
    )
