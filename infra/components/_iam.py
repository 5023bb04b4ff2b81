"""What the components share: the account they deploy into, and IAM policy documents built from Outputs.

Policies are plain dicts turned into JSON with `pulumi.Output.json_dumps`, which waits for the ARNs inside
them; nothing here creates a resource, so it is safe to call from anywhere, including outside `apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi


@dataclass(frozen=True)
class AwsContext:
    """The account, partition and region the stack deploys into, for building ARNs."""

    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    region: str

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> pulumi.Output[str]:
        """`arn:<partition>:<service>:<region>:<account>:<resource>` (region/account left empty when false)."""
        return pulumi.Output.concat(
            "arn:",
            self.partition,
            ":",
            service,
            ":",
            self.region if region else "",
            ":",
            self.account_id if account else "",
            ":",
            resource,
        )


def statement(
    sid: str,
    actions: Sequence[str],
    resources: pulumi.Input[str] | pulumi.Input[Sequence[pulumi.Input[str]]],
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One Allow statement of an identity policy."""
    body: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": resources}
    if condition:
        body["Condition"] = condition
    return body


def document(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """A policy document as a JSON string Output."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str, source_account: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
    """Trust policy letting one AWS service principal assume a role; with `source_account`, only on behalf of
    this account (the confused-deputy guard the service documents)."""
    trust: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account is not None:
        trust["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [trust]})


def ecr_pull_statements(repository_arn: pulumi.Input[str]) -> list[dict[str, Any]]:
    """Pull one repository's images (the token call has no resource-level permission)."""
    return [
        statement("EcrToken", ["ecr:GetAuthorizationToken"], "*"),
        statement(
            "EcrPull",
            ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            [repository_arn],
        ),
    ]


def kms_via_s3_statement(key_arn: pulumi.Input[str], region: str, actions: Sequence[str]) -> dict[str, Any]:
    """Use the stack's key, but only through S3 (SSE-KMS objects), not directly."""
    return statement(
        "KmsThroughS3", actions, [key_arn], {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
    )


def kms_volume_statement(key_arn: pulumi.Input[str]) -> dict[str, Any]:
    """Let SageMaker encrypt the ML storage volumes with the key, through grants to AWS resources only."""
    return statement(
        "EncryptVolumes",
        ["kms:CreateGrant", "kms:DescribeKey"],
        [key_arn],
        {"Bool": {"kms:GrantIsForAWSResource": "true"}},
    )


def sagemaker_observability_statements(ctx: AwsContext, log_group: str) -> list[dict[str, Any]]:
    """Write one SageMaker log group (/aws/sagemaker/...) and publish SageMaker's own metrics."""
    group = ctx.arn("logs", f"log-group:{log_group}")
    return [
        statement(
            "WriteLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            [group, pulumi.Output.concat(group, ":*")],
        ),
        statement(
            "PutMetrics",
            ["cloudwatch:PutMetricData"],
            "*",
            {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
        ),
    ]


def vpc_interface_statements(
    ctx: AwsContext, subnet_ids: pulumi.Input[Sequence[str]], security_group_id: pulumi.Input[str]
) -> list[dict[str, Any]]:
    """What SageMaker needs to put a job's or an endpoint's network interfaces in our subnets: create and delete
    them only there and with our security group; the Describe calls have no resource-level permissions."""
    region = ctx.region
    arns = pulumi.Output.all(ctx.partition, ctx.account_id, security_group_id, subnet_ids).apply(
        lambda v: [
            f"arn:{v[0]}:ec2:{region}:{v[1]}:{resource}"
            for resource in ("network-interface/*", f"security-group/{v[2]}", *(f"subnet/{s}" for s in v[3]))
        ]
    )
    return [
        statement(
            "VpcInterfaces",
            [
                "ec2:CreateNetworkInterface",
                "ec2:CreateNetworkInterfacePermission",
                "ec2:DeleteNetworkInterface",
                "ec2:DeleteNetworkInterfacePermission",
            ],
            arns,
        ),
        statement(
            "DescribeVpc",
            [
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVpcs",
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
            ],
            "*",
        ),
    ]
