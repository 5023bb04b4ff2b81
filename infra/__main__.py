"""The Pulumi program: read the stack config once, compose the components, export what ops needs.

`pulumi up` (Pulumi.yaml: `main: infra/`) runs this file. It creates, in one AWS account and region:
ArtifactStore (KMS key; data, artifacts and access-log buckets), ImageRepos (trainer and serving ECR
repositories), Network (a private VPC, or the one named in config), GpuCapacity (ECS cluster, scale-to-zero
spot GPU Auto Scaling group, capacity provider), SpotInterruption (an EventBridge rule and function that stop the
training tasks on a spot instance about to be reclaimed), TrainingTask (the trainer's task definition and roles) and,
when `deepcloud:modelArtifact` is set, InferenceEndpoint (a SageMaker endpoint: real-time with blue/green rollout,
serverless, or asynchronous scaling to zero; with `deepcloud:endpointMode` multi-model it exists without a model
artifact and serves what ops copies under its S3 prefix) and, when `deepcloud:monthlyBudget` is set, MonthlyBudget
(an AWS Budgets budget on the stack's tag).
Every taggable resource carries `deepcloud:stack=<project>/<stack>` through the provider's default tags.

Pulumi runs infra/ as a folder, with only infra/ on sys.path; `infra` imports because make setup installs the project
into .venv (Pulumi.yaml runs the program in it).
"""

import pulumi
import pulumi_aws as aws

from infra.components import (
    ArtifactStore,
    ArtifactStoreArgs,
    GpuCapacity,
    GpuCapacityArgs,
    ImageRepos,
    ImageReposArgs,
    InferenceEndpoint,
    InferenceEndpointArgs,
    MonthlyBudget,
    MonthlyBudgetArgs,
    Network,
    NetworkArgs,
    SpotInterruption,
    SpotInterruptionArgs,
    TrainingTask,
    TrainingTaskArgs,
)
from infra.components._iam import AwsContext
from infra.config import load
from infra.engine import STACK_TAG, require_engine

require_engine()
cfg = load()

provider = aws.Provider("aws", region=cfg.region, default_tags={"tags": {STACK_TAG: cfg.stack_tag}})
on_provider = pulumi.ResourceOptions(providers=[provider])
invoke = pulumi.InvokeOutputOptions(provider=provider)
account = AwsContext(
    account_id=aws.get_caller_identity_output(opts=invoke).account_id,
    partition=aws.get_partition_output(opts=invoke).partition,
    region=cfg.region,
)

store = ArtifactStore(
    "store",
    ArtifactStoreArgs(
        aws=account,
        protect_data=cfg.protect_data_bucket,
        force_destroy=cfg.force_destroy,
        checkpoint_noncurrent_days=cfg.checkpoint_noncurrent_days,
        key_alias=cfg.name_prefix,
    ),
    opts=on_provider,
)

images = ImageRepos(
    "images", ImageReposArgs(kms_key_arn=store.key_arn, force_delete=cfg.force_destroy), opts=on_provider
)

network = Network(
    "network",
    NetworkArgs(
        region=cfg.region,
        vpc_id=cfg.vpc_id,
        subnet_ids=cfg.subnet_ids,
        vpc_cidr=cfg.vpc_cidr,
        az_count=cfg.az_count,
        interface_endpoints=cfg.interface_endpoints,
    ),
    opts=on_provider,
)

capacity = GpuCapacity(
    "gpu",
    GpuCapacityArgs(
        partition=account.partition,
        subnet_ids=network.subnet_ids,
        security_group_id=network.security_group_id,
        instance_types=cfg.gpu_instance_types,
        max_instances=cfg.gpu_max_instances,
        on_demand_base_capacity=cfg.on_demand_base_capacity,
        on_demand_percentage_above_base=cfg.on_demand_percentage_above_base,
        spot_allocation_strategy=cfg.spot_allocation_strategy,
        ami_parameter=cfg.gpu_ami_parameter,
        root_volume_gib=cfg.root_volume_gib,
        root_volume_type=cfg.root_volume_type,
        stack_tag=cfg.stack_tag,
    ),
    opts=on_provider,
)

spot = SpotInterruption(
    "spot",
    SpotInterruptionArgs(
        aws=account,
        cluster_name=capacity.cluster_name,
        cluster_arn=capacity.cluster_arn,
        key_arn=store.key_arn,
        log_group_name=cfg.log_group("spot-interruption"),
        log_retention_days=cfg.log_retention_days,
    ),
    opts=on_provider,
)

training = TrainingTask(
    "training",
    TrainingTaskArgs(
        aws=account,
        family=f"{cfg.name_prefix}-trainer",
        image=pulumi.Output.concat(images.repository_urls["trainer"], ":", cfg.trainer_image_tag),
        repository_arn=images.repository_arns["trainer"],
        data_bucket_arn=store.data_bucket_arn,
        artifacts_bucket_arn=store.artifacts_bucket_arn,
        key_arn=store.key_arn,
        subnet_ids=network.subnet_ids,
        security_group_id=network.security_group_id,
        gpus=cfg.trainer_gpus,
        cpu=cfg.trainer_cpu,
        memory_mib=cfg.trainer_memory_mib,
        shm_mib=cfg.trainer_shm_mib,
        log_group_name=cfg.log_group("trainer"),
        log_retention_days=cfg.log_retention_days,
    ),
    opts=on_provider,
)

endpoint = None
if cfg.has_endpoint:
    # realtime keeps the logical name it always had; each other mode has its own (its own endpoint name too).
    endpoint = InferenceEndpoint(
        "serving" if cfg.endpoint_mode == "realtime" else f"serving-{cfg.endpoint_mode}",
        InferenceEndpointArgs(
            aws=account,
            endpoint_name=cfg.endpoint_name,
            artifacts_bucket=store.artifacts_bucket,
            artifacts_bucket_arn=store.artifacts_bucket_arn,
            model_key=cfg.model_artifact,
            image=pulumi.Output.concat(images.repository_urls["serving"], ":", cfg.serving_image_tag),
            repository_arn=images.repository_arns["serving"],
            key_arn=store.key_arn,
            subnet_ids=network.subnet_ids,
            security_group_id=network.security_group_id,
            instance_type=cfg.endpoint_instance_type,
            instance_count=cfg.endpoint_instance_count,
            min_instances=cfg.endpoint_min_instances,
            max_instances=cfg.endpoint_max_instances,
            invocations_per_instance=cfg.invocations_per_instance,
            rollout=cfg.rollout,
            rollout_step_instances=cfg.rollout_step_instances,
            bake_seconds=cfg.bake_seconds,
            latency_alarm_ms=cfg.latency_alarm_ms,
            errors_5xx_alarm=cfg.errors_5xx_alarm,
            mode=cfg.endpoint_mode,
            serverless_memory_mb=cfg.serverless_memory_mb,
            serverless_max_concurrency=cfg.serverless_max_concurrency,
            async_backlog_per_instance=cfg.async_backlog_per_instance,
            model_cache_setting=cfg.multi_model_cache,
        ),
        opts=on_provider,
    )

budget = None
if cfg.monthly_budget > 0:
    budget = MonthlyBudget(
        "cost",
        MonthlyBudgetArgs(
            name=f"{cfg.name_prefix}-monthly",
            limit_usd=cfg.monthly_budget,
            tag_key=STACK_TAG,
            tag_value=cfg.stack_tag,
            emails=cfg.budget_emails,
            sns_topic_arn=cfg.budget_sns_topic_arn,
        ),
        opts=on_provider,
    )

# What `make train` / `make deploy TARGET=aws` read with `pulumi stack output --json` (ops/aws/stack.py names the
# keys it needs); ops never builds a resource name itself.
OUTPUTS = {
    "region": cfg.region,
    "stack_tag": cfg.stack_tag,
    "kms_key_arn": store.key_arn,
    "data_bucket": store.data_bucket,
    "artifacts_bucket": store.artifacts_bucket,
    "access_logs_bucket": store.logs_bucket,
    "force_destroy": cfg.force_destroy,
    "protect_data_bucket": cfg.protect_data_bucket,
    "trainer_repository_url": images.repository_urls["trainer"],
    "serving_repository_url": images.repository_urls["serving"],
    "vpc_id": network.vpc_id,
    "subnet_ids": network.subnet_ids,
    "security_group_id": network.security_group_id,
    "cluster_name": capacity.cluster_name,
    "cluster_arn": capacity.cluster_arn,
    "capacity_provider_name": capacity.capacity_provider_name,
    "task_definition_family": training.family,
    "task_definition_arn": training.task_definition_arn,
    "trainer_log_group": training.log_group_name,
    "spot_interruption_log_group": spot.log_group_name,
    "training_role_arn": training.sagemaker_role_arn,
    "endpoint_name": endpoint.endpoint_name if endpoint else None,
    "endpoint_config_name": endpoint.endpoint_config_name if endpoint else None,
    "endpoint_instance_type": cfg.endpoint_instance_type,
    "endpoint_max_instances": cfg.endpoint_max_instances,
    "model_data_url": endpoint.model_data_url if endpoint else None,
    "endpoint_mode": cfg.endpoint_mode,
    "async_prefix": endpoint.async_prefix if endpoint else None,
    "models_prefix": endpoint.models_prefix if endpoint else None,
    "network_profile": "existing-vpc" if cfg.uses_existing_vpc else cfg.network_profile,
    "interface_endpoints_up": cfg.interface_endpoints,
    "monthly_budget": cfg.monthly_budget or None,
    "budget_name": budget.budget_name if budget else None,
}
for key, value in OUTPUTS.items():
    pulumi.export(key, value)
