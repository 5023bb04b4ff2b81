"""The values AWS accepts for a setting, and the limits of our own the checks hold settings to.

Where botocore models the enum (retention days, spot allocation strategies, rollouts, volume types),
tests/infra/test_enums.py compares these lists with it, so one that falls behind AWS fails a test rather than refusing
a valid setting.
"""

from __future__ import annotations

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
