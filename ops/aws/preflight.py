"""`make preflight TARGET=aws`, and the same checks before `make train`/`deploy`/`destroy`: everything that
would otherwise fail after money or a long wait was spent.

1. AWS credentials (STS GetCallerIdentity).
2. The pulumi CLI, a selected stack, and its outputs.
3. A Docker engine (`make preflight` always; the other commands only when an image must be built).
4. Service Quotas for the GPU capacity: the EC2 vCPU quotas (on-demand and spot, whichever the Auto Scaling
   group uses) of every instance family it may launch, or with BACKEND=sagemaker the spot training quota of the
   instance type, for the job's INSTANCE_COUNT instances, and the account's spot training limits on instances per
   job and across jobs. A quota below one instance (SageMaker: below the job's instances) stops with its name, its
   value and how to ask for more; a quota below the group's full size is a warning.
5. `make deploy` and `make rollback`, once the model is known: the endpoint-usage quota of the endpoint's
   instance type, for twice its maximum instance count (check_endpoint_quota: blue/green runs both fleets at once).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from ops.aws import capacity, context, images
from ops.aws.clients import error_code
from ops.aws.console import header, say
from ops.aws.context import Context
from ops.aws.prices import PriceTable
from ops.aws.pulumi import Pulumi
from ops.aws.stack import OUTPUT_KEYS, Stack
from ops.aws.training.base import DEFAULT_BACKEND, DEFAULT_INSTANCE_TYPE
from ops.errors import OpsError
from ops.paths import Paths


@dataclass(frozen=True, slots=True)
class Ec2Quota:
    code: str
    name: str


EC2_QUOTAS = {
    ("G", "on-demand"): Ec2Quota("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("G", "spot"): Ec2Quota("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", "on-demand"): Ec2Quota("L-417A185B", "Running On-Demand P instances"),
    ("P", "spot"): Ec2Quota("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests"),
    ("P5", "spot"): Ec2Quota("L-C4BD4855", "All P5 Spot Instance Requests"),
}
"""EC2's vCPU-based quotas for the GPU families (Service Quotas, service code ec2)."""


def ok(what: str, detail: str) -> None:
    say(f"ok    {what:<16} {detail}")


def warn(what: str, detail: str) -> None:
    say(f"warn  {what:<16} {detail}")


def family(instance_type: str, purchase: str) -> str:
    """The quota family of an instance type: G (g*, vt*), P, or P5 (its spot quota is separate)."""
    name = instance_type.split(".", 1)[0]
    if name.startswith(("g", "vt")):
        return "G"
    if name.startswith("p"):
        return "P5" if name.startswith("p5") and purchase == "spot" else "P"
    raise OpsError(f"{instance_type} is not a G or P (GPU) instance type: preflight knows no quota for it")


def check_credentials(region: str) -> None:
    identity = context.connect(region).client("sts").get_caller_identity()
    ok("AWS credentials", f"{identity['Arn']} (account {identity['Account']})")


def check_stack(repo: Path, stack_name: str | None) -> Stack:
    pulumi = Pulumi(repo, stack_name)
    version = pulumi.run("version", what="the pulumi CLI does not run", stack=False).strip()
    stack = Stack.load(pulumi)
    present = sum(1 for key in OUTPUT_KEYS if getattr(stack.outputs, key) not in (None, "", ()))
    ok(
        "Pulumi stack",
        f"{stack.name} ({stack.tag}), pulumi {version}, {present}/{len(OUTPUT_KEYS)} outputs, "
        f"region {stack.outputs.region}",
    )
    return stack


def check_docker(repo: Path) -> None:
    ok("Docker engine", images.check_docker(repo))


def quota_value(quotas, service: str, code: str) -> float:
    try:
        return float(quotas.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])
    except ClientError as exc:
        if error_code(exc) != "NoSuchResourceException":
            raise
    # Never changed in this account: the AWS default applies.
    return float(quotas.get_aws_default_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])


def _increase(service: str, code: str, value: float, region: str) -> str:
    return (
        f"`aws service-quotas request-service-quota-increase --service-code {service} --quota-code {code} "
        f"--desired-value {value:g} --region {region}` (or the Service Quotas console)"
    )


def check_ec2_quotas(ctx: Context) -> None:
    gpu = capacity.describe(ctx.aws, ctx.outputs.capacity_provider_name)
    purchases = [p for p, used in (("spot", gpu.uses_spot), ("on-demand", gpu.uses_on_demand)) if used]
    quotas = ctx.aws.client("service-quotas")
    for purchase in purchases:
        needs: dict[str, tuple[int, str]] = {}
        for kind in gpu.instance_types:
            vcpus = ctx.prices.get("ec2", kind).vcpus
            if vcpus is None:
                raise OpsError(f"{kind} has no vcpus in {ctx.prices.path.name}: add it so its quota can be checked")
            fam = family(kind, purchase)
            needs[fam] = max(needs.get(fam, (0, "")), (vcpus, kind))
        for fam, (one, kind) in sorted(needs.items()):
            quota = EC2_QUOTAS[(fam, purchase)]
            value = quota_value(quotas, "ec2", quota.code)
            full = one * gpu.max_size
            where = f"'{quota.name}' ({quota.code}) in {ctx.outputs.region}"
            if value < one:
                raise OpsError(
                    f"quota {where} is {value:g} vCPUs, below the {one} one {kind} needs: request "
                    f"{full} with {_increase('ec2', quota.code, full, ctx.outputs.region)}"
                )
            if value < full:
                warn(
                    "EC2 quota",
                    f"{where} is {value:g} vCPUs: enough for one {kind} ({one}), not for the group's "
                    f"{gpu.max_size} instances ({full}); request more with "
                    f"{_increase('ec2', quota.code, full, ctx.outputs.region)}",
                )
            else:
                ok("EC2 quota", f"{where} is {value:g} vCPUs; the group's {gpu.max_size} x {kind} need {full}")


def _sagemaker_quota(ctx: Context, name: str, instance_type: str) -> tuple[float, str, str]:
    """(value, quota code, where) of the SageMaker quota called `name` (Service Quotas lists SageMaker's per
    instance type, e.g. 'ml.g5.xlarge for spot training job usage', 'ml.m5.large for endpoint usage')."""
    quotas = ctx.aws.client("service-quotas")
    for page in quotas.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"):
        for quota in page.get("Quotas", []):
            if quota.get("QuotaName") == name:
                return (
                    float(quota.get("Value", 0)),
                    quota["QuotaCode"],
                    f"'{name}' ({quota['QuotaCode']}) in {ctx.outputs.region}",
                )
    raise OpsError(
        f"Service Quotas lists no SageMaker quota '{name}' in {ctx.outputs.region}: is {instance_type} a "
        "SageMaker instance type offered there?"
    )


SPOT_TRAINING_LIMITS = (
    "Maximum number of instances per spot training job",
    "Number of instances across all spot training jobs",
)
"""Account-wide SageMaker quotas a managed-spot job of N instances must also fit in, beside the per-type
'<type> for spot training job usage' (docs/aws-behaviours.md Q1). Matched by name in what ListServiceQuotas answers;
one that Service Quotas does not list in the region is not checked."""


def _sagemaker_quota_table(ctx: Context) -> dict[str, tuple[float, str]]:
    """Every SageMaker quota Service Quotas lists in the region: name -> (value, quota code); one listing."""
    quotas = ctx.aws.client("service-quotas")
    return {
        quota["QuotaName"]: (float(quota.get("Value", 0)), quota["QuotaCode"])
        for page in quotas.get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker")
        for quota in page.get("Quotas", [])
        if "QuotaName" in quota
    }


def check_sagemaker_quota(ctx: Context, instance_type: str, instance_count: int = 1) -> None:
    """The managed-spot training quota of `instance_type` for the job's `instance_count` instances (a job holds all
    of them at once), then the account's spot limits per job and across jobs."""
    region = ctx.outputs.region
    table = _sagemaker_quota_table(ctx)
    name = f"{instance_type} for spot training job usage"
    if name not in table:
        raise OpsError(
            f"Service Quotas lists no SageMaker quota '{name}' in {region}: is {instance_type} a "
            f"SageMaker instance type offered there? (set INSTANCE_TYPE={DEFAULT_INSTANCE_TYPE}, ...)"
        )
    need = instance_count
    job = f"a job of {need} x {instance_type}" if need > 1 else "a job"
    for quota_name in (name, *SPOT_TRAINING_LIMITS):
        if quota_name not in table:
            continue
        value, code = table[quota_name]
        where = f"'{quota_name}' ({code}) in {region}"
        if value < need:
            fewer = " or lower INSTANCE_COUNT" if need > 1 else ""
            raise OpsError(
                f"quota {where} is {value:g} instances, below the {need} {job} needs: request {need} "
                f"with {_increase('sagemaker', code, need, region)}{fewer}"
            )
        ok("SageMaker quota", f"{where} is {value:g} instances" + (f"; {job} needs {need}" if need > 1 else ""))


def check_endpoint_quota(ctx: Context) -> None:
    """The endpoint-usage quota of the endpoint's instance type, for twice its maximum instance count: a blue/green
    rollout runs the new fleet beside the old one (as large as auto scaling made it) until the old one goes."""
    kind, most = ctx.outputs.endpoint_instance_type, ctx.outputs.endpoint_max_instances
    if ctx.outputs.endpoint_mode == "serverless":
        ok(
            "endpoint quota",
            "serverless endpoint: no instances, so no endpoint-usage quota (SageMaker limits its "
            "concurrency per account instead)",
        )
        return
    if not kind or not most:
        warn(
            "endpoint quota",
            "the stack exports no endpoint_instance_type/endpoint_max_instances: run `pulumi up` "
            "with the current infra/ program to have it checked",
        )
        return
    need = 2 * int(most)
    value, code, where = _sagemaker_quota(ctx, f"{kind} for endpoint usage", kind)
    if value < need:
        raise OpsError(
            f"quota {where} is {value:g} instances, below the {need} a blue/green rollout can need (the new "
            f"fleet beside the old, each up to endpointMaxInstances={most}): request {need} with "
            f"{_increase('sagemaker', code, need, ctx.outputs.region)}, or lower "
            "deepcloud:endpointMaxInstances"
        )
    ok("endpoint quota", f"{where} is {value:g} instances; a rollout of up to {most} needs {need}")


def run(
    repo: Path,
    paths: Paths,
    stack_name: str | None,
    *,
    backend: str = DEFAULT_BACKEND,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    docker: bool = True,
    quotas: bool = True,
    instance_count: int = 1,
) -> Context:
    """Run the checks in order, printing one line each; the first failure is an OpsError."""
    header("preflight (aws)")
    check_credentials(os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    stack = check_stack(repo, stack_name)
    ctx = Context(
        repo=repo, paths=paths, stack=stack, aws=context.connect(stack.outputs.region), prices=PriceTable.load()
    )
    if docker:
        check_docker(repo)
    if quotas:
        if backend == "sagemaker":
            check_sagemaker_quota(ctx, instance_type, instance_count)
        else:
            check_ec2_quotas(ctx)
    return ctx
