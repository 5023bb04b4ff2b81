"""The stack's settings: one typed field per `deepcloud:` key, with its default and what it does, and the values
derived from them (names, tags, rollout durations) that the components read."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from infra.config.keys import NAMESPACE
from infra.config.limits import GPU_AMI_PARAMETER, GREEN_FLEET_ALLOWANCE_S, NAME_LENGTH


@dataclass(kw_only=True, frozen=True, slots=True)
class Settings:
    """Every setting of the stack as a typed value, and what follows from them. Unchecked: build a StackConfig
    (infra/config/stack_config.py), which runs the checks of infra/config/checks.py on these fields."""

    project: str
    """Pulumi project name (Pulumi.yaml); with the stack it makes the `deepcloud:stack` tag."""

    stack: str
    """Pulumi stack name (dev, prod, ...)."""

    region: str
    """AWS region, from `aws:region` (required)."""

    # --- storage -------------------------------------------------------------------------------------------
    protect_data_bucket: bool = True
    """Pulumi `protect` on the data bucket: `pulumi destroy` refuses to run until this is false and applied."""

    force_destroy: bool = False
    """Let `pulumi destroy` empty the artifacts and access-log buckets and delete non-empty ECR repositories
    (and the data bucket, once it is unprotected). False keeps destroy from deleting any stored object."""

    checkpoint_noncurrent_days: int = 7
    """Days a replaced or deleted checkpoint version is kept before S3 expires it (>= 1)."""

    log_retention_days: int = 30
    """CloudWatch Logs retention for the trainer's log group (one of CloudWatch's allowed values)."""

    # --- network -------------------------------------------------------------------------------------------
    vpc_id: str | None = None
    """An existing VPC to use (vpc-...); needs subnetIds. Unset: the stack creates its own private VPC."""

    subnet_ids: tuple[str, ...] = ()
    """Private subnets of vpcId in at least two AZs (JSON list or comma-separated). They need a route to
    ECR, S3, CloudWatch Logs, STS and ECS (a NAT gateway or VPC endpoints): the stack creates none there."""

    network_profile: str = "endpoints"
    """The managed VPC's interface endpoints (7 services in each zone, billed per hour whether used or not; `make
    cost` prices them): `endpoints` keeps them; `on-demand` creates them only while interfaceEndpointsUp is true,
    which ops sets for a training run (and for an endpoint in the VPC) and clears afterwards: $0 while idle. Ignored
    with vpcId (an existing VPC brings its own routes)."""

    interface_endpoints_up: bool = False
    """With networkProfile on-demand: whether the interface endpoints exist now. ops sets it; leave it alone."""

    vpc_cidr: str = "10.42.0.0/16"
    """CIDR of the managed VPC (prefix /16 to /22); each AZ gets one private subnet of a sixteenth of it."""

    az_count: int = 2
    """Availability zones the managed VPC spans (2 to 6)."""

    # --- GPU capacity --------------------------------------------------------------------------------------
    gpu_instance_types: tuple[str, ...] = ("g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge")
    """x86_64 NVIDIA instance types the Auto Scaling group may launch, most preferred first (JSON list or
    comma-separated). Several types widen the spot pools the group can draw from."""

    gpu_max_instances: int = 2
    """Upper bound of the GPU Auto Scaling group (>= 1). The lower bound is always 0: idle costs nothing."""

    on_demand_base_capacity: int = 0
    """How many of the first instances are on-demand rather than spot (0 to gpuMaxInstances)."""

    on_demand_percentage_above_base: int = 0
    """Percent of the instances above the base that are on-demand (0 to 100); the rest are spot."""

    spot_allocation_strategy: str = "capacity-optimized"
    """How spot pools are chosen; capacity-optimized picks the pools least likely to be interrupted, which
    matters more than price for long training jobs."""

    gpu_ami_parameter: str = GPU_AMI_PARAMETER
    """Public SSM parameter resolved by EC2 at each launch to the ECS GPU-optimized AMI."""

    root_volume_gib: int = 100
    """Root EBS volume of each GPU instance, in GiB (>= 30, the GPU AMI's own size); images and scratch
    volumes live there."""

    root_volume_type: str = "gp3"
    """EBS type of the root volume (gp3, gp2, io1, io2)."""

    # --- training task -------------------------------------------------------------------------------------
    trainer_image_tag: str = "0.1.0"
    """Tag of the trainer image in its ECR repository (tags are immutable: push a new tag per build)."""

    trainer_gpus: int = 1
    """GPUs reserved per training task (>= 1)."""

    trainer_cpu: int = 4096
    """CPU units reserved per training task (1024 = one vCPU; >= 256)."""

    trainer_memory_mib: int = 14336
    """Hard memory limit of the trainer container in MiB (>= 512); must fit the smallest GPU type."""

    trainer_shm_mib: int = 2048
    """Size of /dev/shm in MiB for DataLoader worker processes (>= 64, below trainerMemoryMib)."""

    # --- inference endpoint --------------------------------------------------------------------------------
    model_artifact: str | None = None
    """Key of a model.tar.gz in the artifacts bucket, under models/ (e.g. models/job-1/model.tar.gz).
    Unset: no endpoint. Set: a SageMaker endpoint serves it."""

    serving_image_tag: str = "0.1.0"
    """Tag of the serving image in its ECR repository."""

    endpoint_mode: str = "realtime"
    """realtime: instances behind a blue/green endpoint, always on (endpointMinInstances of them). serverless: billed
    per request and nothing while idle; CPU only, at most 6 GB, no VPC, no network isolation, one variant, so no
    canary (policy waivers say so). async: requests queue in S3, instances scale to zero on the backlog and back out
    when one arrives; results land in the artifacts bucket. multi-model: a real-time endpoint (blue/green, auto
    scaling) whose container hosts every model under multi-model/models/ of the artifacts bucket, loaded on first use
    and chosen per request (TargetModel); it exists while this mode is set (no modelArtifact: `make deploy TARGET=aws
    MODEL=` copies a run there, no `pulumi up`), on CPU instance types only. Changing it creates a new endpoint (its
    own name) and deletes the old one: SageMaker cannot turn one kind into another in place."""

    multi_model_cache: str = "Enabled"
    """multi-model: ModelCacheSetting. Enabled (SageMaker's default) keeps loaded models in memory and on disk until
    room is needed, so repeat requests skip the download; Disabled unloads each after its request (many rare models)."""

    serverless_memory_mb: int = 2048
    """Memory of a serverless endpoint: 1024 to 6144 in steps of 1024 MB (SageMaker's sizes); price scales with it."""

    serverless_max_concurrency: int = 5
    """Most concurrent invocations of a serverless endpoint (1 to 200); more are throttled."""

    async_backlog_per_instance: int = 5
    """Async endpoints: the backlog per instance auto scaling keeps (ApproximateBacklogSizePerInstance target)."""

    endpoint_instance_type: str = "ml.m5.large"
    """SageMaker instance type of the endpoint. Changing it on a live endpoint needs auto scaling
    deregistered first (SageMaker refuses the update otherwise)."""

    endpoint_instance_count: int = 2
    """Instances the endpoint starts with (between endpointMinInstances and endpointMaxInstances)."""

    endpoint_min_instances: int = 2
    """Auto scaling lower bound (>= 1; >= twice rolloutStepInstances for CANARY and LINEAR)."""

    endpoint_max_instances: int = 4
    """Auto scaling upper bound (>= endpointMinInstances)."""

    invocations_per_instance: int = 100
    """Target of the scaling policy: invocations per instance per minute (>= 1)."""

    rollout: str = "CANARY"
    """How a new model replaces the old one: CANARY, LINEAR (blue/green with traffic shifting) or
    ALL_AT_ONCE; any of them rolls back when an alarm fires."""

    rollout_step_instances: int = 1
    """Instances in the canary (CANARY) or in each step (LINEAR); at most half the fleet (>= 1)."""

    bake_seconds: int = 600
    """How long each traffic step is watched by the rollback alarms before the next, and the old fleet kept after
    the last (0 to 3600). A whole rollout (`rollout_seconds`) must fit in the 60 minutes pulumi-aws waits for it."""

    latency_alarm_ms: int = 1000
    """Roll back when the average model latency stays above this many milliseconds (>= 1)."""

    errors_5xx_alarm: int = 1
    """Roll back when a minute has at least this many 5XX invocation errors (>= 1)."""

    # --- cost ----------------------------------------------------------------------------------------------
    monthly_budget: int = 0
    """An AWS Budgets cost budget, in whole USD a month, on the stack's tag, with alerts at 80 % and 100 % of actual
    and forecast spend; `make train` refuses a run whose worst case exceeds what is left of it. 0: no budget."""

    budget_emails: tuple[str, ...] = ()
    """Who the budget alerts email (JSON list or comma-separated; up to 10). The budget needs these or an SNS topic."""

    budget_sns_topic_arn: str | None = None
    """An SNS topic the budget alerts publish to (its policy must let budgets.amazonaws.com publish)."""

    # --- derived values ------------------------------------------------------------------------------------
    @property
    def stack_tag(self) -> str:
        """Value of the `deepcloud:stack` tag every taggable resource carries: `<project>/<stack>`."""
        return f"{self.project}/{self.stack}"

    @property
    def name_prefix(self) -> str:
        """`<project>-<stack>` in the characters every AWS name accepts, at most 40 of them, starting and ending with
        a letter or digit (SageMaker's name pattern, `[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`, forbids a trailing `-`)."""
        cleaned = re.sub(r"[^a-z0-9-]+", "-", f"{self.project}-{self.stack}".lower())
        return cleaned.strip("-")[:NAME_LENGTH].rstrip("-")

    @property
    def endpoint_name(self) -> str:
        """The SageMaker endpoint's fixed name; it stays while models and endpoint configs are replaced. Each mode
        has its own (`<prefix>`, `<prefix>-serverless`, `<prefix>-async`), so a change of mode creates the new endpoint
        before the old one is deleted (Pulumi's create-before-delete; SageMaker names are unique)."""
        return self.name_prefix if self.endpoint_mode == "realtime" else f"{self.name_prefix}-{self.endpoint_mode}"

    @property
    def has_endpoint(self) -> bool:
        """Whether the stack has an endpoint: a model is configured, or the mode is multi-model (whose models are the
        objects under its S3 prefix, not a config value)."""
        return self.model_artifact is not None or self.endpoint_mode == "multi-model"

    @property
    def endpoint_rollout(self) -> str:
        """The blue/green traffic routing the endpoint updates with: the configured one for realtime; ALL_AT_ONCE for
        async, whose fleet may be scaled to zero (a canary needs instances to shift traffic to)."""
        return "ALL_AT_ONCE" if self.endpoint_mode == "async" else self.rollout

    @property
    def interface_endpoints(self) -> bool:
        """Whether the managed VPC has its interface endpoints now (never for an existing VPC)."""
        return not self.uses_existing_vpc and (self.network_profile == "endpoints" or self.interface_endpoints_up)

    def log_group(self, what: str) -> str:
        """`/deepcloud/<name_prefix>/<what>`: the stack's CloudWatch log groups, one per workload."""
        return f"/{NAMESPACE}/{self.name_prefix}/{what}"

    @property
    def uses_existing_vpc(self) -> bool:
        return self.vpc_id is not None

    @property
    def rollout_bakes(self) -> int:
        """Baking periods of one blue/green rollout (SageMaker's deployment guardrails): ALL_AT_ONCE and CANARY bake
        once after their traffic shift, LINEAR after each of its steps over a fleet that auto scaling may have grown
        to endpointMaxInstances; then every rollout waits TerminationWaitInSeconds (bakeSeconds too) more."""
        if self.endpoint_rollout == "LINEAR":
            return math.ceil(self.endpoint_max_instances / self.rollout_step_instances) + 1
        return 2

    @property
    def rollout_seconds(self) -> int:
        """How long one endpoint rollout takes at most: the green fleet allowance plus every baking period."""
        return GREEN_FLEET_ALLOWANCE_S + self.rollout_bakes * self.bake_seconds
