"""GpuCapacity: an ECS cluster whose GPU instances exist only while training tasks need them.

An Auto Scaling group with min 0 launches spot (optionally some on-demand) GPU instances from a launch
template, and an ECS capacity provider with managed scaling drives its desired count from the tasks waiting
for GPUs: a RunTask on the cluster's default strategy scales it out, and the group drains back to zero
instances when the tasks are gone. Idle cost: zero instances.

Instances boot the ECS GPU-optimized AMI named by its public SSM parameter, require IMDSv2, get no public
IP, encrypt their root volume, and take their permissions from an instance profile with the AWS managed ECS
instance policy. A spot interruption drains the instance (no new tasks are placed on it), but draining does not
stop tasks started with RunTask (ECS guide, "Draining Amazon ECS container instances"): SpotInterruption
(spot_interruption.py) does, so the trainer gets SIGTERM and checkpoints.

ECS needs its service-linked role (AWSServiceRoleForECS) to create the capacity provider and to attach awsvpc
tasks' network interfaces. A fresh account has none until CreateCluster makes it, asynchronously, and nothing
waits for it: CreateCapacityProvider then fails with "ECS Service Linked Role does not exist" and works on a second
`pulumi up`. So the program creates the role when the account lacks it, and the capacity provider waits for the
cluster, whose create the provider retries until ECS can assume the role (terraform-provider-aws
internal/service/ecs/cluster.go, retryClusterCreate; CreateCapacityProvider has no such retry).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components._base import Component
from infra.components._iam import assume_role_policy
from infra.engine import STACK_TAG

ECS_SERVICE = "ecs.amazonaws.com"
ECS_SERVICE_LINKED_ROLE = "AWSServiceRoleForECS"
"""The role IAM creates for ECS (path /aws-service-role/ecs.amazonaws.com/), one per account."""
ECS_INSTANCE_POLICY = "service-role/AmazonEC2ContainerServiceforEC2Role"
"""AWS managed policy for the ECS container agent on an instance (register, poll, pull, log)."""
STOP_TIMEOUT_SECONDS = 120
"""SIGTERM to SIGKILL for containers on these instances: the trainer checkpoints within it (SageMaker's 120 s)."""


@dataclass
class GpuCapacityArgs:
    partition: pulumi.Input[str]
    """AWS partition, for the managed policy ARN."""

    subnet_ids: pulumi.Input[Sequence[str]]
    """Private subnets the instances launch into (at least two zones)."""

    security_group_id: pulumi.Input[str]
    """Security group of the instances."""

    instance_types: Sequence[str]
    """GPU instance types, most preferred first."""

    max_instances: int
    """Upper bound of the group; the lower bound is 0."""

    on_demand_base_capacity: int
    """First instances launched on-demand."""

    on_demand_percentage_above_base: int
    """Percent on-demand above the base; the rest are spot."""

    spot_allocation_strategy: str
    """Spot pool selection."""

    ami_parameter: str
    """Public SSM parameter naming the ECS GPU-optimized AMI."""

    root_volume_gib: int
    """Root volume size."""

    root_volume_type: str
    """Root volume EBS type."""

    stack_tag: str
    """Value of the deepcloud:stack tag; provider default tags do not reach Auto Scaling instances."""


class GpuCapacity(Component[GpuCapacityArgs]):
    cluster_name: pulumi.Output[str]
    cluster_arn: pulumi.Output[str]
    capacity_provider_name: pulumi.Output[str]
    auto_scaling_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: GpuCapacityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        service_role = self._create_service_linked_role()
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[{"name": "containerInsights", "value": "enabled"}],
            opts=self._child(depends_on=service_role),
        )
        profile = self._create_instance_profile()
        template = self._create_launch_template(cluster, profile)
        group = self._create_auto_scaling_group(template)
        provider = self._create_capacity_provider(cluster, group)
        self.cluster_name = cluster.name
        self.cluster_arn = cluster.arn
        self.capacity_provider_name = provider.name
        self.auto_scaling_group_name = group.name
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "capacity_provider_name": self.capacity_provider_name,
                "auto_scaling_group_name": self.auto_scaling_group_name,
            }
        )

    def _create_service_linked_role(self) -> list[aws.iam.ServiceLinkedRole]:
        """ECS's service-linked role, created only where the account has none (IAM refuses a second one), and
        never deleted: other clusters of the account rely on it, and a later run that finds it declares it no more,
        which retain_on_delete turns into dropping it from the state."""
        existing = aws.iam.get_roles(
            name_regex=f"^{ECS_SERVICE_LINKED_ROLE}$",
            path_prefix=f"/aws-service-role/{ECS_SERVICE}/",
            opts=pulumi.InvokeOptions(parent=self),
        )
        if existing.names:
            return []
        return [
            aws.iam.ServiceLinkedRole(
                f"{self._name}-ecs-service-role",
                aws_service_name=ECS_SERVICE,
                description="ECS: capacity providers and awsvpc network interfaces",
                opts=self._child(retain_on_delete=True),
            )
        ]

    def _create_instance_profile(self) -> aws.iam.InstanceProfile:
        role = aws.iam.Role(
            f"{self._name}-instance",
            description="deepcloud GPU instances: the ECS container agent",
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            opts=self._child(),
        )
        aws.iam.RolePolicyAttachment(
            f"{self._name}-instance-ecs",
            role=role.name,
            policy_arn=pulumi.Output.concat("arn:", self._args.partition, ":iam::aws:policy/", ECS_INSTANCE_POLICY),
            opts=self._child(),
        )
        return aws.iam.InstanceProfile(f"{self._name}-instance", role=role.name, opts=self._child())

    def _create_launch_template(
        self, cluster: aws.ecs.Cluster, profile: aws.iam.InstanceProfile
    ) -> aws.ec2.LaunchTemplate:
        args = self._args
        stack_tags = {STACK_TAG: args.stack_tag, "Name": f"{self._name}-gpu"}
        return aws.ec2.LaunchTemplate(
            f"{self._name}-gpu",
            description="deepcloud GPU instances for ECS training tasks",
            # resolve:ssm: EC2 reads the parameter at every launch, so scaling out from zero always boots the
            # current GPU AMI without a stack update.
            image_id=f"resolve:ssm:{args.ami_parameter}",
            iam_instance_profile={"arn": profile.arn},
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                # hop limit 1: containers cannot reach the instance's credentials through IMDS.
                "http_put_response_hop_limit": 1,
            },
            network_interfaces=[
                {
                    "device_index": 0,
                    "associate_public_ip_address": "false",
                    "delete_on_termination": "true",
                    "security_groups": [args.security_group_id],
                }
            ],
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",
                    # encrypted with the account's aws/ebs key: a customer key would also need a grant for the
                    # Auto Scaling service-linked role, or launches fail.
                    "ebs": {
                        "volume_size": args.root_volume_gib,
                        "volume_type": args.root_volume_type,
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            user_data=cluster.name.apply(_user_data),
            tag_specifications=[{"resource_type": kind, "tags": stack_tags} for kind in ("instance", "volume")],
            update_default_version=True,
            opts=self._child(),
        )

    def _create_auto_scaling_group(self, template: aws.ec2.LaunchTemplate) -> aws.autoscaling.Group:
        args = self._args
        return aws.autoscaling.Group(
            f"{self._name}-gpu",
            min_size=0,
            max_size=args.max_instances,
            vpc_zone_identifiers=args.subnet_ids,
            mixed_instances_policy={
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": template.id,
                        "version": template.latest_version.apply(str),
                    },
                    "overrides": [{"instance_type": kind} for kind in args.instance_types],
                },
                "instances_distribution": {
                    "on_demand_base_capacity": args.on_demand_base_capacity,
                    "on_demand_percentage_above_base_capacity": args.on_demand_percentage_above_base,
                    "on_demand_allocation_strategy": "prioritized",
                    "spot_allocation_strategy": args.spot_allocation_strategy,
                },
            },
            # No Capacity Rebalancing: on a rebalance recommendation Auto Scaling launches a replacement and only then
            # terminates the old instance (botocore's CapacityRebalance text), but managed termination protection
            # keeps an instance that runs a task protected ("Amazon ECS only terminates EC2 instances that don't have
            # any running Amazon ECS tasks", ECS guide) and a RunTask task never moves, so the replacement would idle,
            # billed, until managed scaling removes it. An actual interruption is handled instead: SIGTERM, checkpoint.
            capacity_rebalance=False,
            protect_from_scale_in=True,  # ECS managed termination protection requires it
            force_delete=True,  # destroy terminates instances instead of waiting on their scale-in protection
            tags=[
                {"key": "AmazonECSManaged", "value": "true", "propagate_at_launch": True},
                {"key": STACK_TAG, "value": args.stack_tag, "propagate_at_launch": True},
            ],
            # ignore desired_capacity: ECS managed scaling owns it; a stack update must not reset it to zero.
            opts=self._child(ignore_changes=["desired_capacity"]),
        )

    def _create_capacity_provider(
        self, cluster: aws.ecs.Cluster, group: aws.autoscaling.Group
    ) -> aws.ecs.CapacityProvider:
        # depends_on the cluster: its create is retried until ECS can assume its service-linked role, which
        # CreateCapacityProvider needs and does not retry for (module docstring).
        provider = aws.ecs.CapacityProvider(
            f"{self._name}-gpu",
            auto_scaling_group_provider={
                "auto_scaling_group_arn": group.arn,
                "managed_termination_protection": "ENABLED",
                "managed_draining": "ENABLED",
                "managed_scaling": {
                    "status": "ENABLED",
                    "target_capacity": 100,
                    "minimum_scaling_step_size": 1,
                    "maximum_scaling_step_size": self._args.max_instances,
                    "instance_warmup_period": 300,
                },
            },
            opts=self._child(depends_on=[cluster]),
        )
        aws.ecs.ClusterCapacityProviders(
            f"{self._name}-cluster-providers",
            cluster_name=cluster.name,
            capacity_providers=[provider.name],
            default_capacity_provider_strategies=[{"capacity_provider": provider.name, "weight": 1, "base": 0}],
            opts=self._child(),
        )
        return provider


def _user_data(cluster_name: str) -> str:
    """ECS agent settings: join the cluster, expose the GPUs, drain on spot interruption, 120 s stop timeout,
    and keep awsvpc tasks away from the instance metadata service."""
    script = "\n".join(
        [
            "#!/bin/bash",
            "cat >> /etc/ecs/ecs.config <<'EOF'",
            f"ECS_CLUSTER={cluster_name}",
            "ECS_ENABLE_GPU_SUPPORT=true",
            "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
            f"ECS_CONTAINER_STOP_TIMEOUT={STOP_TIMEOUT_SECONDS}s",
            "ECS_AWSVPC_BLOCK_IMDS=true",
            "EOF",
            "",
        ]
    )
    return base64.b64encode(script.encode()).decode()
