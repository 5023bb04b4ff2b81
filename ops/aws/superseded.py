"""The SageMaker models and endpoint configurations a rollout leaves behind, and deleting those nothing uses.

infra/ marks the endpoint's Model and EndpointConfiguration `retain_on_delete`: `pulumi up` replaces them for a new
model but never deletes the old ones, because the provider cannot tell a completed rollout from one SageMaker rolled
back onto the old configuration (docs/aws-behaviours.md). Ops can: DescribeEndpoint names the configuration that
serves. What the stack made (its `deepcloud:stack` tag, from the provider's default tags) and is neither serving,
nor a model of the serving configuration, nor still in the stack's state is safe to delete; `make deploy` does it
once the endpoint is InService, `make destroy` once the endpoint is gone. Neither costs anything while it waits:
SageMaker bills instances, not models or configurations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.engine import STACK_TAG
from ops.aws.clients import error_code
from ops.aws.console import say
from ops.aws.context import Context


@dataclass(frozen=True, slots=True)
class Leftover:
    kind: str
    """endpoint-config or model"""
    name: str
    arn: str


def _listed(sagemaker: Any) -> list[Leftover]:
    """Every endpoint configuration and model of the account and region, as SageMaker names them."""
    found = []
    for page in sagemaker.get_paginator("list_endpoint_configs").paginate():
        found += [
            Leftover("endpoint-config", c["EndpointConfigName"], c["EndpointConfigArn"])
            for c in page.get("EndpointConfigs", [])
        ]
    for page in sagemaker.get_paginator("list_models").paginate():
        found += [Leftover("model", m["ModelName"], m["ModelArn"]) for m in page.get("Models", [])]
    return found


def _ours(ctx: Context, sagemaker: Any, item: Leftover) -> bool:
    """Whether `item` carries the stack's tag (SageMaker ListTags; the tagging API would also do, but moto 5.2.5
    indexes endpoint configurations under a malformed ARN)."""
    pages = sagemaker.get_paginator("list_tags").paginate(ResourceArn=item.arn)
    return {"Key": STACK_TAG, "Value": ctx.stack.tag} in [t for page in pages for t in page.get("Tags", [])]


def unused(ctx: Context, serving_config: str | None, managed: set[str]) -> list[Leftover]:
    """The stack's models and configurations that are neither `serving_config`, nor one of its models, nor in the
    stack's state (`managed`: ARNs from `pulumi stack export`)."""
    sagemaker = ctx.aws.client("sagemaker")
    keep = {arn.lower() for arn in managed}
    keep_names: set[tuple[str, str]] = set()
    if serving_config:
        keep_names.add(("endpoint-config", serving_config.lower()))
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=serving_config)["ProductionVariants"]
        keep_names |= {("model", v["ModelName"].lower()) for v in variants}
    candidates = [
        item
        for item in _listed(sagemaker)
        if item.arn.lower() not in keep and (item.kind, item.name.lower()) not in keep_names
    ]
    return [item for item in candidates if _ours(ctx, sagemaker, item)]


def delete(ctx: Context, items: list[Leftover]) -> list[Leftover]:
    """Delete configurations first (a model in use by one cannot go first); the ones actually deleted."""
    sagemaker = ctx.aws.client("sagemaker")
    deleted = []
    for item in sorted(items, key=lambda i: (i.kind != "endpoint-config", i.name)):
        try:
            if item.kind == "endpoint-config":
                sagemaker.delete_endpoint_config(EndpointConfigName=item.name)
            else:
                sagemaker.delete_model(ModelName=item.name)
        except ClientError as exc:
            if error_code(exc) != "ValidationException":  # "Could not find ...": already gone
                raise
            continue
        say(f"deleted      superseded {item.kind} {item.name}")
        deleted.append(item)
    return deleted


def prune(ctx: Context, endpoint: str) -> list[Leftover]:
    """After a rollout: if `endpoint` is InService, delete what it no longer uses; a busy endpoint is left alone
    (SageMaker: "You must not delete an EndpointConfig in use by an endpoint that is live or while the UpdateEndpoint
    or CreateEndpoint operations are being performed on the endpoint")."""
    described = ctx.aws.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    if described.get("EndpointStatus") != "InService":
        say(
            f"kept         superseded models and configurations: endpoint {endpoint} is "
            f"{described.get('EndpointStatus')}; the next deploy deletes them"
        )
        return []
    return delete(ctx, unused(ctx, described["EndpointConfigName"], ctx.pulumi.managed_arns()))
