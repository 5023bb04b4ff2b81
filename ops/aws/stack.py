"""The Pulumi stack as ops sees it: its outputs and config keys, read and changed through the `pulumi` CLI
(pulumi.py).

This is the one place that names the stack outputs and config keys ops depends on. The infra program
(infra/) exports the outputs; ops never builds a resource name itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ops.aws.pulumi import Pulumi
from ops.errors import OpsError


@dataclass(frozen=True, slots=True)
class StackOutputs:
    """The stack outputs ops reads (`pulumi stack output --json`); each field name is the output's key."""

    region: str
    """AWS region of the stack."""
    data_bucket: str
    """S3 bucket for training data (protected: `pulumi destroy` keeps it unless the config says otherwise)."""
    artifacts_bucket: str
    """S3 bucket for models/<run-id>/, checkpoints/<run-id>/ and the deploy history."""
    kms_key_arn: str
    """KMS key of both buckets; SageMaker jobs encrypt their volumes and outputs with it."""
    trainer_repository_url: str
    """ECR repository URL of the trainer image (<account>.dkr.ecr.<region>.amazonaws.com/<name>)."""
    serving_repository_url: str
    """ECR repository URL of the serving image."""
    cluster_name: str
    """ECS cluster with the GPU capacity."""
    capacity_provider_name: str
    """ECS capacity provider backed by the GPU Auto Scaling group."""
    task_definition_family: str
    """Family of the trainer's ECS task definition (RunTask takes its latest ACTIVE revision)."""
    subnet_ids: tuple[str, ...]
    """Private subnets for awsvpc tasks and SageMaker jobs."""
    security_group_id: str
    """Security group for training tasks and jobs."""
    endpoint_name: str | None = None
    """The SageMaker endpoint's name; present once a model is configured (`make deploy`)."""
    training_role_arn: str | None = None
    """IAM role SageMaker training jobs run as; only BACKEND=sagemaker needs it."""
    stack_tag: str | None = None
    """Value of the `deepcloud:stack` tag on every resource (`<project>/<stack>` when absent)."""
    task_definition_arn: str | None = None
    """The task definition revision Pulumi registered (RunTask runs exactly it; else the family's latest)."""
    endpoint_config_name: str | None = None
    """The endpoint configuration the last `pulumi up` applied: what DescribeEndpoint must name after a rollout."""
    endpoint_instance_type: str | None = None
    """The endpoint's SageMaker instance type (deepcloud:endpointInstanceType, or infra's default)."""
    endpoint_max_instances: int | None = None
    """The endpoint's auto scaling upper bound: a rollout may run twice as many instances."""
    access_logs_bucket: str | None = None
    """S3 bucket the data and artifacts buckets log their accesses to (never empty once they were used)."""
    force_destroy: bool | None = None
    """deepcloud:forceDestroy as applied: may `pulumi destroy` delete buckets and repositories that hold data?"""
    protect_data_bucket: bool | None = None
    """deepcloud:protectDataBucket as applied: `make destroy` keeps the data bucket while it is true."""
    endpoint_mode: str | None = None
    """realtime, serverless, async or multi-model (deepcloud:endpointMode; absent from stacks older than the modes:
    realtime)."""
    async_prefix: str | None = None
    """s3://<artifacts>/async/ of an async endpoint: requests go under input/, results come back under output/."""
    models_prefix: str | None = None
    """s3://<artifacts>/multi-model/models/ of a multi-model endpoint: the archives it can serve (TargetModel is the key
    under it)."""
    network_profile: str | None = None
    """endpoints, on-demand or existing-vpc (deepcloud:networkProfile)."""
    interface_endpoints_up: bool | None = None
    """Whether the managed VPC's interface endpoints exist now (always with the endpoints profile)."""
    monthly_budget: int | None = None
    """deepcloud:monthlyBudget in USD, when there is a budget."""
    budget_name: str | None = None
    """The AWS Budgets budget of the stack's tag, when there is one (`make train` reads what is left of it)."""

    @classmethod
    def parse(cls, raw: dict, stack: str) -> StackOutputs:
        known = {f.name: f for f in fields(cls)}
        required = [name for name in known if name not in OPTIONAL_OUTPUTS]
        missing = [name for name in required if raw.get(name) in (None, "", [])]
        if missing:
            raise OpsError(
                f"stack '{stack}' has no output {', '.join(missing)}: run `pulumi up` with the current "
                "infra/ program (it exports them)"
            )
        values: dict[str, Any] = {}
        for name in known:
            value = raw.get(name)
            if name == "subnet_ids" and value is not None:
                value = tuple(value) if isinstance(value, list) else tuple(s.strip() for s in str(value).split(","))
            if name in OPTIONAL_OUTPUTS and not isinstance(value, bool):
                value = value or None  # absent, null and "" all mean "not there (yet)"
            values[name] = value
        return cls(**values)


OPTIONAL_OUTPUTS = (
    "endpoint_name",
    "training_role_arn",
    "stack_tag",
    "task_definition_arn",
    "endpoint_config_name",
    "endpoint_instance_type",
    "endpoint_max_instances",
    "access_logs_bucket",
    "force_destroy",
    "protect_data_bucket",
    "endpoint_mode",
    "async_prefix",
    "models_prefix",
    "network_profile",
    "interface_endpoints_up",
    "monthly_budget",
    "budget_name",
)
OUTPUT_KEYS = tuple(f.name for f in fields(StackOutputs))
"""Every stack output key ops reads, for the README and for reconciling with infra/__main__.py."""


@dataclass(frozen=True, slots=True)
class ConfigKeys:
    """The `deepcloud:` stack config keys ops reads or sets (infra/config/settings.py defines them)."""

    trainer_image_tag: str = "deepcloud:trainerImageTag"
    serving_image_tag: str = "deepcloud:servingImageTag"
    model_artifact: str = "deepcloud:modelArtifact"
    endpoint_instance_type: str = "deepcloud:endpointInstanceType"
    protect_data_bucket: str = "deepcloud:protectDataBucket"
    interface_endpoints_up: str = "deepcloud:interfaceEndpointsUp"
    endpoint_mode: str = "deepcloud:endpointMode"


CONFIG = ConfigKeys()


def project_name(repo: Path) -> str:
    """`name:` in Pulumi.yaml: with the stack name it makes the stack tag."""
    try:
        text = (repo / "Pulumi.yaml").read_text()
    except OSError:
        raise OpsError(f"no Pulumi.yaml in {repo}: run ops from the deepcloud checkout") from None
    match = re.search(r"^name:\s*(\S+)", text, flags=re.M)
    if not match:
        raise OpsError(f"{repo / 'Pulumi.yaml'} has no `name:`")
    return match.group(1).strip("'\"")


@dataclass(frozen=True, slots=True)
class Stack:
    """A selected stack with its outputs: what every aws command starts from."""

    name: str
    project: str
    outputs: StackOutputs
    pulumi: Pulumi

    @property
    def tag(self) -> str:
        """The value of the `deepcloud:stack` tag on its resources."""
        return self.outputs.stack_tag or f"{self.project}/{self.name}"

    @classmethod
    def load(cls, pulumi: Pulumi) -> Stack:
        name = pulumi.stack_name()
        raw = pulumi.outputs()
        if not raw:
            raise OpsError(f"stack '{name}' has no outputs: run `pulumi up` first (README, 'The AWS workflow')")
        return cls(name=name, project=project_name(pulumi.repo), outputs=StackOutputs.parse(raw, name), pulumi=pulumi)

    def reload(self) -> Stack:
        """The same stack after `pulumi up` changed its outputs."""
        return Stack(
            name=self.name,
            project=self.project,
            outputs=StackOutputs.parse(self.pulumi.outputs(), self.name),
            pulumi=self.pulumi,
        )
