"""The stack's configuration: one typed object, read once from `pulumi.Config`.

Every setting is a `deepcloud:<camelCaseKey>` entry in `Pulumi.<stack>.yaml` (see Pulumi.dev.yaml.example),
except the region, which is the AWS provider's own `aws:region`. Values arrive as strings (lists as JSON or
comma-separated); they are parsed and checked here, and every error names the config key and what it accepts,
so a typo stops `pulumi preview` with one line instead of failing half-way through `pulumi up`.

AWS enum values used as defaults (instance types, allocation strategies, retention days) are checked against
botocore's service models by tests/infra/test_enums.py; this module only checks their shape, so a brand-new
instance type is not refused here before pulumi-aws knows about it.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi

NAMESPACE = "deepcloud"
"""The config namespace: the project name in Pulumi.yaml."""

RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
"""The retention periods CloudWatch Logs accepts (PutRetentionPolicy)."""
SPOT_ALLOCATION_STRATEGIES = (
    "capacity-optimized",
    "capacity-optimized-prioritized",
    "price-capacity-optimized",
    "lowest-price",
)
"""Auto Scaling's InstancesDistribution.SpotAllocationStrategy values."""
ROLLOUTS = ("CANARY", "LINEAR", "ALL_AT_ONCE")
"""SageMaker blue/green traffic routing (TrafficRoutingConfigType)."""
ENDPOINT_MODES = ("realtime", "serverless", "async", "multi-model")
"""How the model is hosted: instances behind a real-time endpoint (blue/green), a serverless endpoint (billed per
request, CPU only, not in the VPC), an asynchronous endpoint whose instances scale to zero on its backlog, or a
multi-model endpoint (real-time instances serving every model under an S3 prefix, each chosen per request)."""
MODEL_CACHE_SETTINGS = ("Enabled", "Disabled")
"""MultiModelConfig.ModelCacheSetting values (botocore)."""
NETWORK_PROFILES = ("endpoints", "on-demand")
"""The managed VPC's interface endpoints: always there (`endpoints`), or only while ops needs them (`on-demand`)."""
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
"""The memory sizes a serverless variant may have (botocore ProductionVariantServerlessConfig.MemorySizeInMB)."""
SERVERLESS_MAX_CONCURRENCY = 200
"""The most concurrent invocations a serverless variant may take (botocore ServerlessMaxConcurrency)."""
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2")
"""EBS volume types a root volume may use (the SSD ones)."""
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
"""The public SSM parameter that names the current ECS GPU-optimized AMI (Amazon Linux 2023, NVIDIA driver)."""
PROVIDER_ENDPOINT_WAIT_S = 3600
"""How long pulumi-aws waits for a SageMaker endpoint to be InService after UpdateEndpoint: the 60-minute timeout of
terraform-provider-aws's waitEndpointInService (internal/service/sagemaker/endpoint.go), which pulumi-aws wraps.
A rollout that takes longer fails `pulumi up` while SageMaker carries on (docs/aws-behaviours.md)."""
GREEN_FLEET_ALLOWANCE_S = 600
"""Our allowance, not an AWS figure, for SageMaker to launch the new fleet, download the model and see /ping answer
before the first traffic step of a rollout."""
NAME_LENGTH = 40
"""Longest name_prefix: room for the suffixes AWS names get (a 63-character SageMaker name, a 64-character role)."""

_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d")
_VPC = re.compile(r"vpc-[0-9a-f]{8,17}")
_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
_GPU_TYPE = re.compile(r"[gp]\d+[a-z]*\.[0-9a-z]+")
_ARM_GPU_TYPE = re.compile(r"g\d+g\.")  # Graviton GPU families: the ECS GPU AMI is x86_64 only
_ENDPOINT_TYPE = re.compile(r"ml\.[a-z0-9-]+\.[0-9a-z]+")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SNS_TOPIC = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")
_CPU_ENDPOINT_TYPE = re.compile(r"ml\.(?!(g|p|inf|trn)\d)")  # not GPU (g, p), Inferentia or Trainium
_MODEL_KEY = re.compile(r"models/[A-Za-z0-9!_.*'()/-]+\.tar\.gz")
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


class ConfigError(pulumi.RunError):
    """A bad or missing setting; Pulumi prints a RunError as one line, without a traceback."""


def config_key(field_name: str) -> str:
    """`gpu_max_instances` -> `gpuMaxInstances`, the key under the deepcloud: namespace."""
    head, *rest = field_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(kw_only=True, frozen=True, slots=True)
class StackConfig:
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
    """The managed VPC's interface endpoints (7 services in each zone, billed per hour): `endpoints` keeps them,
    about $100 a month at us-east-1 prices for 2 zones; `on-demand` creates them only while interfaceEndpointsUp
    is true, which ops sets for a training run (and for an endpoint in the VPC) and clears afterwards: $0 while
    idle. Ignored with vpcId (an existing VPC brings its own routes)."""

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

    def __post_init__(self) -> None:
        for check in (
            self._check_storage,
            self._check_network,
            self._check_capacity,
            self._check_task,
            self._check_endpoint,
            self._check_budget,
        ):
            check()

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

    # --- checks --------------------------------------------------------------------------------------------
    def _check_storage(self) -> None:
        _require(self.checkpoint_noncurrent_days >= 1, "checkpoint_noncurrent_days", "must be >= 1 day")
        _require(
            self.log_retention_days in RETENTION_DAYS,
            "log_retention_days",
            f"must be one of CloudWatch's retention periods: {', '.join(map(str, RETENTION_DAYS))}",
        )

    def _check_network(self) -> None:
        _require(
            bool(_REGION.fullmatch(self.region)),
            None,
            f"aws:region {self.region!r} is not a region name like us-east-1",
        )
        _require(
            self.network_profile in NETWORK_PROFILES,
            "network_profile",
            f"must be one of {', '.join(NETWORK_PROFILES)} (an existing VPC: set deepcloud:vpcId instead)",
        )
        if self.vpc_id is None:
            _require(not self.subnet_ids, "subnet_ids", "needs deepcloud:vpcId as well (the VPC they belong to)")
            try:
                network = ipaddress.IPv4Network(self.vpc_cidr)
            except ValueError:
                network = None
            _require(
                network is not None and 16 <= network.prefixlen <= 22,
                "vpc_cidr",
                f"{self.vpc_cidr!r} must be an IPv4 network from /16 to /22, e.g. 10.42.0.0/16",
            )
            _require(2 <= self.az_count <= 6, "az_count", "must be 2 to 6 availability zones")
            return
        _require(bool(_VPC.fullmatch(self.vpc_id)), "vpc_id", f"{self.vpc_id!r} is not a VPC id like vpc-0abc1234")
        _require(
            len(self.subnet_ids) >= 2,
            "subnet_ids",
            "needs at least two private subnets of deepcloud:vpcId, in different availability zones",
        )
        for subnet in self.subnet_ids:
            _require(
                bool(_SUBNET.fullmatch(subnet)), "subnet_ids", f"{subnet!r} is not a subnet id like subnet-0abc1234"
            )
        _require(len(set(self.subnet_ids)) == len(self.subnet_ids), "subnet_ids", "lists a subnet twice")

    def _check_capacity(self) -> None:
        _require(bool(self.gpu_instance_types), "gpu_instance_types", "needs at least one GPU instance type")
        for kind in self.gpu_instance_types:
            _require(
                bool(_GPU_TYPE.fullmatch(kind)) and not _ARM_GPU_TYPE.match(kind),
                "gpu_instance_types",
                f"{kind!r} is not an x86_64 NVIDIA GPU instance type (g4dn.xlarge, g5.xlarge, p4d.24xlarge, ...)",
            )
        _require(
            len(set(self.gpu_instance_types)) == len(self.gpu_instance_types),
            "gpu_instance_types",
            "lists an instance type twice",
        )
        _require(1 <= self.gpu_max_instances <= 100, "gpu_max_instances", "must be 1 to 100")
        _require(
            0 <= self.on_demand_base_capacity <= self.gpu_max_instances,
            "on_demand_base_capacity",
            f"must be 0 to gpuMaxInstances ({self.gpu_max_instances})",
        )
        _require(
            0 <= self.on_demand_percentage_above_base <= 100,
            "on_demand_percentage_above_base",
            "must be a percentage, 0 to 100",
        )
        _require(
            self.spot_allocation_strategy in SPOT_ALLOCATION_STRATEGIES,
            "spot_allocation_strategy",
            f"must be one of {', '.join(SPOT_ALLOCATION_STRATEGIES)}",
        )
        _require(
            self.gpu_ami_parameter.startswith("/aws/service/"),
            "gpu_ami_parameter",
            "must be a public AWS SSM parameter path (/aws/service/...)",
        )
        _require(self.root_volume_gib >= 30, "root_volume_gib", "must be >= 30 GiB (the GPU AMI's snapshot size)")
        _require(self.root_volume_type in VOLUME_TYPES, "root_volume_type", f"must be one of {', '.join(VOLUME_TYPES)}")

    def _check_task(self) -> None:
        _require(
            bool(_IMAGE_TAG.fullmatch(self.trainer_image_tag)),
            "trainer_image_tag",
            f"{self.trainer_image_tag!r} is not a Docker image tag",
        )
        _require(self.trainer_gpus >= 1, "trainer_gpus", "must be >= 1")
        _require(self.trainer_cpu >= 256, "trainer_cpu", "must be >= 256 CPU units (1024 = one vCPU)")
        _require(self.trainer_memory_mib >= 512, "trainer_memory_mib", "must be >= 512 MiB")
        _require(
            64 <= self.trainer_shm_mib < self.trainer_memory_mib,
            "trainer_shm_mib",
            f"must be >= 64 MiB and below trainerMemoryMib ({self.trainer_memory_mib})",
        )

    def _check_endpoint(self) -> None:
        if self.model_artifact is not None:
            _require(
                bool(_MODEL_KEY.fullmatch(self.model_artifact))
                and ".." not in self.model_artifact
                and "//" not in self.model_artifact,
                "model_artifact",
                f"{self.model_artifact!r} must be the key of a .tar.gz under models/ in the artifacts bucket, "
                "e.g. models/job-1/model.tar.gz",
            )
        _require(
            bool(_IMAGE_TAG.fullmatch(self.serving_image_tag)),
            "serving_image_tag",
            f"{self.serving_image_tag!r} is not a Docker image tag",
        )
        _require(
            bool(_ENDPOINT_TYPE.fullmatch(self.endpoint_instance_type)),
            "endpoint_instance_type",
            f"{self.endpoint_instance_type!r} is not a SageMaker instance type like ml.m5.large",
        )
        _require(self.endpoint_mode in ENDPOINT_MODES, "endpoint_mode", f"must be one of {', '.join(ENDPOINT_MODES)}")
        _require(
            self.serverless_memory_mb in SERVERLESS_MEMORY_MB,
            "serverless_memory_mb",
            f"must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} MB (SageMaker's serverless sizes)",
        )
        _require(
            1 <= self.serverless_max_concurrency <= SERVERLESS_MAX_CONCURRENCY,
            "serverless_max_concurrency",
            f"must be 1 to {SERVERLESS_MAX_CONCURRENCY} concurrent invocations",
        )
        _require(self.async_backlog_per_instance >= 1, "async_backlog_per_instance", "must be >= 1 request")
        _require(self.latency_alarm_ms >= 1, "latency_alarm_ms", "must be >= 1 ms")
        _require(self.errors_5xx_alarm >= 1, "errors_5xx_alarm", "must be >= 1 error per minute")
        _require(self.endpoint_min_instances >= 1, "endpoint_min_instances", "must be >= 1")
        _require(
            self.endpoint_max_instances >= self.endpoint_min_instances,
            "endpoint_max_instances",
            f"must be >= endpointMinInstances ({self.endpoint_min_instances})",
        )
        _require(
            self.endpoint_min_instances <= self.endpoint_instance_count <= self.endpoint_max_instances,
            "endpoint_instance_count",
            f"must be between endpointMinInstances ({self.endpoint_min_instances}) "
            f"and endpointMaxInstances ({self.endpoint_max_instances})",
        )
        _require(self.invocations_per_instance >= 1, "invocations_per_instance", "must be >= 1 per minute")
        _require(self.rollout in ROLLOUTS, "rollout", f"must be one of {', '.join(ROLLOUTS)}")
        _require(self.rollout_step_instances >= 1, "rollout_step_instances", "must be >= 1")
        if self.endpoint_mode == "multi-model":
            self._check_multi_model()
        if self.endpoint_rollout != "ALL_AT_ONCE" and self.endpoint_mode in ("realtime", "multi-model"):
            _require(
                2 * self.rollout_step_instances <= self.endpoint_min_instances,
                "rollout_step_instances",
                f"a {self.rollout} step may be at most half the fleet: with {self.rollout_step_instances} "
                f"the endpoint needs endpointMinInstances >= {2 * self.rollout_step_instances}",
            )
        _require(0 <= self.bake_seconds <= 3600, "bake_seconds", "must be 0 to 3600 seconds")
        if self.endpoint_mode == "serverless":
            return  # no deployment guardrails: nothing bakes, no alarms (SageMaker guide, "Deployment guardrails")
        longest = (PROVIDER_ENDPOINT_WAIT_S - GREEN_FLEET_ALLOWANCE_S) // self.rollout_bakes
        _require(
            self.rollout_seconds <= PROVIDER_ENDPOINT_WAIT_S,
            "bake_seconds",
            f"{self.bake_seconds} makes a {self.endpoint_rollout} rollout take about {self.rollout_seconds} s "
            f"({GREEN_FLEET_ALLOWANCE_S} s for the new fleet + {self.rollout_bakes} bakes of "
            f"{self.bake_seconds} s), "
            f"longer than the {PROVIDER_ENDPOINT_WAIT_S} s pulumi-aws waits for an endpoint update: `pulumi up` "
            f"would fail while SageMaker carries on. Set it to at most {longest}",
        )

    def _check_multi_model(self) -> None:
        """What SageMaker and this mode refuse (SageMaker guide, "Supported algorithms, frameworks, and instances for
        multi-model endpoints"; docs/aws-behaviours.md S19)."""
        _require(
            self.multi_model_cache in MODEL_CACHE_SETTINGS,
            "multi_model_cache",
            f"must be one of {', '.join(MODEL_CACHE_SETTINGS)} (SageMaker's ModelCacheSetting)",
        )
        _require(
            bool(_CPU_ENDPOINT_TYPE.match(self.endpoint_instance_type)),
            "endpoint_instance_type",
            f"{self.endpoint_instance_type} cannot host a multi-model endpoint: SageMaker serves GPU and "
            "accelerator multi-model endpoints only with its Triton container; use a CPU type like ml.m5.large",
        )
        _require(
            self.model_artifact is None,
            "model_artifact",
            "is not used by a multi-model endpoint (it serves every model under multi-model/models/, which "
            "`make deploy TARGET=aws MODEL=<run-id>` copies there): remove it with "
            "`pulumi config rm deepcloud:modelArtifact`",
        )

    def _check_budget(self) -> None:
        _require(self.monthly_budget >= 0, "monthly_budget", "must be 0 (no budget) or a whole number of USD")
        for address in self.budget_emails:
            _require(bool(_EMAIL.fullmatch(address)), "budget_emails", f"{address!r} is not an email address")
        _require(len(self.budget_emails) <= 10, "budget_emails", "takes at most 10 addresses (AWS Budgets' limit)")
        if self.budget_sns_topic_arn is not None:
            _require(
                bool(_SNS_TOPIC.fullmatch(self.budget_sns_topic_arn)),
                "budget_sns_topic_arn",
                f"{self.budget_sns_topic_arn!r} is not an SNS topic ARN like arn:aws:sns:us-east-1:123456789012:x",
            )
        if self.monthly_budget > 0:
            _require(
                bool(self.budget_emails) or self.budget_sns_topic_arn is not None,
                "monthly_budget",
                "needs someone to alert: set deepcloud:budgetEmails or deepcloud:budgetSnsTopicArn",
            )


_FIXED = ("project", "stack", "region")
KEYS = {config_key(f.name): f for f in dataclasses.fields(StackConfig) if f.name not in _FIXED}
"""Every deepcloud: config key and the StackConfig field it fills."""


def _require(ok: bool, field_name: str | None, message: str) -> None:
    if not ok:
        raise ConfigError(message if field_name is None else f"{NAMESPACE}:{config_key(field_name)} {message}")


def _parse(key: str, text: str, default: object) -> object:
    where = f"{NAMESPACE}:{key}"
    if isinstance(default, bool):
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{where} must be true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"{where} must be a whole number, got {text!r}") from None
    if isinstance(default, tuple):
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except json.JSONDecodeError:
                raise ConfigError(f"{where} is not a valid JSON list: {text!r}") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"{where} must be a list of strings, got {text!r}")
        else:
            items = stripped.split(",")
        return tuple(i.strip() for i in items if i.strip())
    value = text.strip()
    if not value:
        raise ConfigError(f"{where} is set but empty: remove it (pulumi config rm {where}) or give it a value")
    return value


def parse(values: Mapping[str, str], *, project: str, stack: str, region: str | None) -> StackConfig:
    """A StackConfig from `deepcloud:` values keyed without the namespace (strings, as Pulumi stores them)."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f" (did you mean {NAMESPACE}:{close[0]}?)" if close else ""
        raise ConfigError(
            f"{NAMESPACE}:{unknown[0]} is not a deepcloud setting{hint}; Pulumi.dev.yaml.example lists them all"
        )
    if not region:
        raise ConfigError("aws:region is not set: run `pulumi config set aws:region us-east-1` (or your region)")
    parsed = {KEYS[key].name: _parse(key, text, KEYS[key].default) for key, text in values.items()}
    return StackConfig(project=project, stack=stack, region=region.strip(), **parsed)


def load() -> StackConfig:
    """Read the stack's configuration once from `pulumi.Config` (call it once, from __main__)."""
    from pulumi.runtime.config import CONFIG  # the engine's flat config map: the only way to see unknown keys

    settings = pulumi.Config(NAMESPACE)
    prefix = f"{NAMESPACE}:"
    present = [key.removeprefix(prefix) for key in CONFIG.get() if key.startswith(prefix)]
    values = {key: settings.get(key) for key in present}
    region = pulumi.Config("aws").get("region")
    return parse(
        {k: v for k, v in values.items() if v is not None},
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        region=region,
    )
