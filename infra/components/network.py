"""Network: where the GPU instances, training tasks and the SageMaker endpoint run.

Either an existing VPC and private subnets named in config, or a managed VPC with one private subnet per
availability zone and no internet path at all: no internet gateway, no NAT, no public IPs. Everything the
workloads call is reached through VPC endpoints instead: S3 (gateway), ECR api and dkr (image pulls),
CloudWatch Logs, STS, and the three ECS endpoints the container agent needs to register the GPU instances.
Security groups take no ingress from 0.0.0.0/0: the workload group only admits itself (multi-node
training), the endpoint group only HTTPS from inside the VPC.

The interface endpoints bill per hour in every zone, whether anything uses them or not (docs/aws-behaviours.md C3;
`make cost` prices them for the stack's config); the S3 gateway endpoint is free. With `interface_endpoints` false
(the on-demand network profile while nothing runs) the managed VPC has only the gateway endpoint, and ops brings the
others up before a training run needs them and removes them after (ops/aws/network.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components._base import Component

INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "logs", "sts", "ecs", "ecs-agent", "ecs-telemetry")
"""Interface endpoints of the managed VPC (com.amazonaws.<region>.<name>); S3 is a gateway endpoint."""


@dataclass
class NetworkArgs:
    region: str
    """Region of the endpoints' service names."""

    vpc_id: str | None
    """An existing VPC, or None for a managed one."""

    subnet_ids: Sequence[str]
    """Private subnets of the existing VPC (ignored for a managed VPC)."""

    vpc_cidr: str
    """CIDR of the managed VPC."""

    az_count: int
    """Availability zones of the managed VPC."""

    interface_endpoints: bool = True
    """Whether the managed VPC has its interface endpoints now (the S3 gateway endpoint is always there)."""


class Network(Component[NetworkArgs]):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        if args.vpc_id is not None:
            vpc_id: pulumi.Output[str] = pulumi.Output.from_input(args.vpc_id)
            subnet_ids: pulumi.Output[list[str]] = pulumi.Output.from_input(list(args.subnet_ids))
            workload = self._create_workload_security_group(vpc_id)
        else:
            vpc = self._create_vpc()
            subnets, routes = self._create_private_subnets(vpc)
            workload = self._create_workload_security_group(vpc.id)
            self._create_endpoints(vpc, subnets, routes)
            vpc_id = vpc.id
            subnet_ids = pulumi.Output.all(*[subnet.id for subnet in subnets])
        self.vpc_id = vpc_id
        self.subnet_ids = subnet_ids
        self.security_group_id = workload.id
        self.register_outputs(
            {"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids, "security_group_id": self.security_group_id}
        )

    def _create_vpc(self) -> aws.ec2.Vpc:
        vpc = aws.ec2.Vpc(
            f"{self._name}-vpc",
            cidr_block=self._args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,  # private DNS names of the interface endpoints need both
            tags={"Name": self._name},
            opts=self._child(),
        )
        # Adopt the VPC's default security group and strip its rules, so nothing can use its allow-all.
        aws.ec2.DefaultSecurityGroup(
            f"{self._name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags={"Name": f"{self._name}-default-unused"},
            opts=self._child(),
        )
        return vpc

    def _create_private_subnets(self, vpc: aws.ec2.Vpc) -> tuple[list[aws.ec2.Subnet], aws.ec2.RouteTable]:
        """One subnet per zone, a sixteenth of the VPC each, sharing one route table with no internet route."""
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        network = ipaddress.IPv4Network(self._args.vpc_cidr)
        blocks = list(network.subnets(new_prefix=network.prefixlen + 4))
        routes = aws.ec2.RouteTable(
            f"{self._name}-private", vpc_id=vpc.id, tags={"Name": f"{self._name}-private"}, opts=self._child()
        )
        subnets = []
        for index in range(self._args.az_count):
            subnet = aws.ec2.Subnet(
                f"{self._name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=str(blocks[index]),
                availability_zone=zones.names[index],
                map_public_ip_on_launch=False,
                tags={"Name": f"{self._name}-private-{index}"},
                opts=self._child(),
            )
            aws.ec2.RouteTableAssociation(
                f"{self._name}-private-{index}", subnet_id=subnet.id, route_table_id=routes.id, opts=self._child()
            )
            subnets.append(subnet)
        return subnets, routes

    def _create_workload_security_group(self, vpc_id: pulumi.Input[str]) -> aws.ec2.SecurityGroup:
        return aws.ec2.SecurityGroup(
            f"{self._name}-workload",
            vpc_id=vpc_id,
            description="deepcloud GPU instances, training tasks and endpoint: no inbound except from itself",
            ingress=[
                {
                    "description": "tasks of one job talk to each other (multi-node training)",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "self": True,
                }
            ],
            egress=[
                {
                    "description": "HTTPS to AWS APIs (VPC endpoints, or NAT in an existing VPC)",
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                },
                {
                    "description": "tasks of one job talk to each other (multi-node training)",
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "self": True,
                },
            ],
            opts=self._child(),
        )

    def _create_endpoints(
        self, vpc: aws.ec2.Vpc, subnets: Sequence[aws.ec2.Subnet], routes: aws.ec2.RouteTable
    ) -> None:
        aws.ec2.VpcEndpoint(
            f"{self._name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{self._args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[routes.id],
            opts=self._child(),
        )
        if not self._args.interface_endpoints:
            return
        group = aws.ec2.SecurityGroup(
            f"{self._name}-endpoints",
            vpc_id=vpc.id,
            description="deepcloud VPC endpoints: HTTPS from the VPC",
            ingress=[
                {
                    "description": "HTTPS from inside the VPC",
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": [self._args.vpc_cidr],
                }
            ],
            egress=[],
            opts=self._child(),
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{self._name}-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{self._args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[subnet.id for subnet in subnets],
                security_group_ids=[group.id],
                opts=self._child(),
            )
