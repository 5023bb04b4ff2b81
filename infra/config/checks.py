"""What the settings must satisfy: each check names the key it refuses and what the key accepts.

AWS enum values are checked against the lists in infra/config/limits.py; instance types only by their shape, so a
brand-new instance type is not refused here before pulumi-aws knows about it. The checks run in a fixed order, so a
config with several mistakes always reports the same one first.
"""

from __future__ import annotations

import ipaddress
import re

from infra.config.keys import require
from infra.config.limits import (
    ENDPOINT_MODES,
    GREEN_FLEET_ALLOWANCE_S,
    MODEL_CACHE_SETTINGS,
    NETWORK_PROFILES,
    PROVIDER_ENDPOINT_WAIT_S,
    RETENTION_DAYS,
    ROLLOUTS,
    SERVERLESS_MAX_CONCURRENCY,
    SERVERLESS_MEMORY_MB,
    SPOT_ALLOCATION_STRATEGIES,
    VOLUME_TYPES,
)
from infra.config.settings import Settings

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


def _check_storage(cfg: Settings) -> None:
    require(cfg.checkpoint_noncurrent_days >= 1, "checkpoint_noncurrent_days", "must be >= 1 day")
    require(
        cfg.log_retention_days in RETENTION_DAYS,
        "log_retention_days",
        f"must be one of CloudWatch's retention periods: {', '.join(map(str, RETENTION_DAYS))}",
    )


def _check_network(cfg: Settings) -> None:
    require(
        bool(_REGION.fullmatch(cfg.region)),
        None,
        f"aws:region {cfg.region!r} is not a region name like us-east-1",
    )
    require(
        cfg.network_profile in NETWORK_PROFILES,
        "network_profile",
        f"must be one of {', '.join(NETWORK_PROFILES)} (an existing VPC: set deepcloud:vpcId instead)",
    )
    if cfg.vpc_id is None:
        require(not cfg.subnet_ids, "subnet_ids", "needs deepcloud:vpcId as well (the VPC they belong to)")
        try:
            network = ipaddress.IPv4Network(cfg.vpc_cidr)
        except ValueError:
            network = None
        require(
            network is not None and 16 <= network.prefixlen <= 22,
            "vpc_cidr",
            f"{cfg.vpc_cidr!r} must be an IPv4 network from /16 to /22, e.g. 10.42.0.0/16",
        )
        require(2 <= cfg.az_count <= 6, "az_count", "must be 2 to 6 availability zones")
        return
    require(bool(_VPC.fullmatch(cfg.vpc_id)), "vpc_id", f"{cfg.vpc_id!r} is not a VPC id like vpc-0abc1234")
    require(
        len(cfg.subnet_ids) >= 2,
        "subnet_ids",
        "needs at least two private subnets of deepcloud:vpcId, in different availability zones",
    )
    for subnet in cfg.subnet_ids:
        require(bool(_SUBNET.fullmatch(subnet)), "subnet_ids", f"{subnet!r} is not a subnet id like subnet-0abc1234")
    require(len(set(cfg.subnet_ids)) == len(cfg.subnet_ids), "subnet_ids", "lists a subnet twice")


def _check_capacity(cfg: Settings) -> None:
    require(bool(cfg.gpu_instance_types), "gpu_instance_types", "needs at least one GPU instance type")
    for kind in cfg.gpu_instance_types:
        require(
            bool(_GPU_TYPE.fullmatch(kind)) and not _ARM_GPU_TYPE.match(kind),
            "gpu_instance_types",
            f"{kind!r} is not an x86_64 NVIDIA GPU instance type (g4dn.xlarge, g5.xlarge, p4d.24xlarge, ...)",
        )
    require(
        len(set(cfg.gpu_instance_types)) == len(cfg.gpu_instance_types),
        "gpu_instance_types",
        "lists an instance type twice",
    )
    require(1 <= cfg.gpu_max_instances <= 100, "gpu_max_instances", "must be 1 to 100")
    require(
        0 <= cfg.on_demand_base_capacity <= cfg.gpu_max_instances,
        "on_demand_base_capacity",
        f"must be 0 to gpuMaxInstances ({cfg.gpu_max_instances})",
    )
    require(
        0 <= cfg.on_demand_percentage_above_base <= 100,
        "on_demand_percentage_above_base",
        "must be a percentage, 0 to 100",
    )
    require(
        cfg.spot_allocation_strategy in SPOT_ALLOCATION_STRATEGIES,
        "spot_allocation_strategy",
        f"must be one of {', '.join(SPOT_ALLOCATION_STRATEGIES)}",
    )
    require(
        cfg.gpu_ami_parameter.startswith("/aws/service/"),
        "gpu_ami_parameter",
        "must be a public AWS SSM parameter path (/aws/service/...)",
    )
    require(cfg.root_volume_gib >= 30, "root_volume_gib", "must be >= 30 GiB (the GPU AMI's snapshot size)")
    require(cfg.root_volume_type in VOLUME_TYPES, "root_volume_type", f"must be one of {', '.join(VOLUME_TYPES)}")


def _check_task(cfg: Settings) -> None:
    require(
        bool(_IMAGE_TAG.fullmatch(cfg.trainer_image_tag)),
        "trainer_image_tag",
        f"{cfg.trainer_image_tag!r} is not a Docker image tag",
    )
    require(cfg.trainer_gpus >= 1, "trainer_gpus", "must be >= 1")
    require(cfg.trainer_cpu >= 256, "trainer_cpu", "must be >= 256 CPU units (1024 = one vCPU)")
    require(cfg.trainer_memory_mib >= 512, "trainer_memory_mib", "must be >= 512 MiB")
    require(
        64 <= cfg.trainer_shm_mib < cfg.trainer_memory_mib,
        "trainer_shm_mib",
        f"must be >= 64 MiB and below trainerMemoryMib ({cfg.trainer_memory_mib})",
    )


def _check_endpoint(cfg: Settings) -> None:
    _check_what_is_served(cfg)
    _check_mode_sizes(cfg)
    _check_alarms_and_fleet(cfg)
    require(cfg.rollout in ROLLOUTS, "rollout", f"must be one of {', '.join(ROLLOUTS)}")
    require(cfg.rollout_step_instances >= 1, "rollout_step_instances", "must be >= 1")
    if cfg.endpoint_mode == "multi-model":
        _check_multi_model(cfg)
    _check_rollout_fits(cfg)


def _check_what_is_served(cfg: Settings) -> None:
    """The model, the serving image, the instance type and the mode."""
    if cfg.model_artifact is not None:
        require(
            bool(_MODEL_KEY.fullmatch(cfg.model_artifact))
            and ".." not in cfg.model_artifact
            and "//" not in cfg.model_artifact,
            "model_artifact",
            f"{cfg.model_artifact!r} must be the key of a .tar.gz under models/ in the artifacts bucket, "
            "e.g. models/job-1/model.tar.gz",
        )
    require(
        bool(_IMAGE_TAG.fullmatch(cfg.serving_image_tag)),
        "serving_image_tag",
        f"{cfg.serving_image_tag!r} is not a Docker image tag",
    )
    require(
        bool(_ENDPOINT_TYPE.fullmatch(cfg.endpoint_instance_type)),
        "endpoint_instance_type",
        f"{cfg.endpoint_instance_type!r} is not a SageMaker instance type like ml.m5.large",
    )
    require(cfg.endpoint_mode in ENDPOINT_MODES, "endpoint_mode", f"must be one of {', '.join(ENDPOINT_MODES)}")


def _check_mode_sizes(cfg: Settings) -> None:
    """The serverless memory and concurrency and the async backlog target, checked whatever the mode."""
    require(
        cfg.serverless_memory_mb in SERVERLESS_MEMORY_MB,
        "serverless_memory_mb",
        f"must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} MB (SageMaker's serverless sizes)",
    )
    require(
        1 <= cfg.serverless_max_concurrency <= SERVERLESS_MAX_CONCURRENCY,
        "serverless_max_concurrency",
        f"must be 1 to {SERVERLESS_MAX_CONCURRENCY} concurrent invocations",
    )
    require(cfg.async_backlog_per_instance >= 1, "async_backlog_per_instance", "must be >= 1 request")


def _check_alarms_and_fleet(cfg: Settings) -> None:
    """The rollback alarms' thresholds and the instance bounds auto scaling keeps the fleet between."""
    require(cfg.latency_alarm_ms >= 1, "latency_alarm_ms", "must be >= 1 ms")
    require(cfg.errors_5xx_alarm >= 1, "errors_5xx_alarm", "must be >= 1 error per minute")
    require(cfg.endpoint_min_instances >= 1, "endpoint_min_instances", "must be >= 1")
    require(
        cfg.endpoint_max_instances >= cfg.endpoint_min_instances,
        "endpoint_max_instances",
        f"must be >= endpointMinInstances ({cfg.endpoint_min_instances})",
    )
    require(
        cfg.endpoint_min_instances <= cfg.endpoint_instance_count <= cfg.endpoint_max_instances,
        "endpoint_instance_count",
        f"must be between endpointMinInstances ({cfg.endpoint_min_instances}) "
        f"and endpointMaxInstances ({cfg.endpoint_max_instances})",
    )
    require(cfg.invocations_per_instance >= 1, "invocations_per_instance", "must be >= 1 per minute")


def _check_rollout_fits(cfg: Settings) -> None:
    """A canary or linear step leaves half the fleet serving, and the whole rollout ends before pulumi-aws stops
    waiting for it."""
    if cfg.endpoint_rollout != "ALL_AT_ONCE" and cfg.endpoint_mode in ("realtime", "multi-model"):
        require(
            2 * cfg.rollout_step_instances <= cfg.endpoint_min_instances,
            "rollout_step_instances",
            f"a {cfg.rollout} step may be at most half the fleet: with {cfg.rollout_step_instances} "
            f"the endpoint needs endpointMinInstances >= {2 * cfg.rollout_step_instances}",
        )
    require(0 <= cfg.bake_seconds <= 3600, "bake_seconds", "must be 0 to 3600 seconds")
    if cfg.endpoint_mode == "serverless":
        return  # no deployment guardrails: nothing bakes, no alarms (SageMaker guide, "Deployment guardrails")
    longest = (PROVIDER_ENDPOINT_WAIT_S - GREEN_FLEET_ALLOWANCE_S) // cfg.rollout_bakes
    require(
        cfg.rollout_seconds <= PROVIDER_ENDPOINT_WAIT_S,
        "bake_seconds",
        f"{cfg.bake_seconds} makes a {cfg.endpoint_rollout} rollout take about {cfg.rollout_seconds} s "
        f"({GREEN_FLEET_ALLOWANCE_S} s for the new fleet + {cfg.rollout_bakes} bakes of "
        f"{cfg.bake_seconds} s), "
        f"longer than the {PROVIDER_ENDPOINT_WAIT_S} s pulumi-aws waits for an endpoint update: `pulumi up` "
        f"would fail while SageMaker carries on. Set it to at most {longest}",
    )


def _check_multi_model(cfg: Settings) -> None:
    """What SageMaker and this mode refuse (SageMaker guide, "Supported algorithms, frameworks, and instances for
    multi-model endpoints"; docs/aws-behaviours.md S19)."""
    require(
        cfg.multi_model_cache in MODEL_CACHE_SETTINGS,
        "multi_model_cache",
        f"must be one of {', '.join(MODEL_CACHE_SETTINGS)} (SageMaker's ModelCacheSetting)",
    )
    require(
        bool(_CPU_ENDPOINT_TYPE.match(cfg.endpoint_instance_type)),
        "endpoint_instance_type",
        f"{cfg.endpoint_instance_type} cannot host a multi-model endpoint: SageMaker serves GPU and "
        "accelerator multi-model endpoints only with its Triton container; use a CPU type like ml.m5.large",
    )
    require(
        cfg.model_artifact is None,
        "model_artifact",
        "is not used by a multi-model endpoint (it serves every model under multi-model/models/, which "
        "`make deploy TARGET=aws MODEL=<run-id>` copies there): remove it with "
        "`pulumi config rm deepcloud:modelArtifact`",
    )


def _check_budget(cfg: Settings) -> None:
    require(cfg.monthly_budget >= 0, "monthly_budget", "must be 0 (no budget) or a whole number of USD")
    for address in cfg.budget_emails:
        require(bool(_EMAIL.fullmatch(address)), "budget_emails", f"{address!r} is not an email address")
    require(len(cfg.budget_emails) <= 10, "budget_emails", "takes at most 10 addresses (AWS Budgets' limit)")
    if cfg.budget_sns_topic_arn is not None:
        require(
            bool(_SNS_TOPIC.fullmatch(cfg.budget_sns_topic_arn)),
            "budget_sns_topic_arn",
            f"{cfg.budget_sns_topic_arn!r} is not an SNS topic ARN like arn:aws:sns:us-east-1:123456789012:x",
        )
    if cfg.monthly_budget > 0:
        require(
            bool(cfg.budget_emails) or cfg.budget_sns_topic_arn is not None,
            "monthly_budget",
            "needs someone to alert: set deepcloud:budgetEmails or deepcloud:budgetSnsTopicArn",
        )


def check(cfg: Settings) -> None:
    """Raise a ConfigError naming the first setting of `cfg` that AWS or this stack would refuse."""
    for step in (_check_storage, _check_network, _check_capacity, _check_task, _check_endpoint, _check_budget):
        step(cfg)
