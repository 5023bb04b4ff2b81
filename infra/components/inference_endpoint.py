"""InferenceEndpoint: the serving image behind a SageMaker endpoint, replaced blue/green with rollback.

Created only when the stack config names a model artifact. The Model and the EndpointConfiguration have no
explicit name: Pulumi auto-names them, so a new model or setting creates the new configuration first and
UpdateEndpoint moves the endpoint onto it (SageMaker's blue/green deployment: canary or linear traffic shifting by
default, rolled back if either alarm fires while it bakes). The Endpoint itself keeps one fixed name, so callers and
the alarms' dimensions never change, and it is updated in place rather than replaced.

Replaced Models and EndpointConfigurations are retained, not deleted: the provider's wait for the update
(terraform-provider-aws waitEndpointInService) takes the next InService as success, which is also what a rolled-back
endpoint reports, back on the *old* configuration; deleting that one then would leave the endpoint serving a
configuration that no longer exists, and every later UpdateEndpoint failing (terraform-provider-aws #48997). ops
deletes a superseded one once DescribeEndpoint shows the endpoint on another configuration (ops/aws/deploy.py), and
`make destroy` the rest after the endpoint is gone (docs/aws-behaviours.md).

The model runs with network isolation inside the stack's private subnets; the execution role can read only the
trained models (models/ of the artifacts bucket), pull only the serving repository and write only this endpoint's
logs. Application Auto Scaling tracks invocations per instance between the configured bounds
(infra/components/endpoint_scaling.py).

Four modes (`deepcloud:endpointMode`, docs/aws-behaviours.md S13-S17, S19):

- realtime: the above; instances always on, at least endpointMinInstances of them.
- serverless: a ServerlessConfig variant (memory and maximum concurrency), billed per request and nothing while idle.
  SageMaker offers it on CPU only and without a VPC, network isolation, a second variant or deployment guardrails, so
  its model is outside the VPC, without isolation, its configuration has no volume key (no instance of ours to hold
  one) and its endpoint has no blue/green policy or alarms: waivers.toml names each exception. Its role gets no VPC
  statements.
- async: an AsyncInferenceConfig writing results and failures under async/ of the artifacts bucket with the stack's
  key; Application Auto Scaling between 0 and endpointMaxInstances on ApproximateBacklogSizePerInstance, plus a step
  policy on a HasBacklogWithoutCapacity alarm that adds the first instance when a request waits at zero (target
  tracking alone never scales out from zero: with no instance there is no backlog per instance). Updates are
  blue/green ALL_AT_ONCE (a canary needs instances to shift traffic to) with the same rollback alarms.
- multi-model: realtime's instances, rollout, alarms and scaling, but the container runs in `MultiModel` mode with an S3
  prefix as its model data (multi-model/models/ of the artifacts bucket) and the configured ModelCacheSetting: SageMaker
  loads a model from under it on its first request naming it (TargetModel) and unloads the least used when it needs
  room. A model is added by copying an archive there (ops/aws/deploy.py), without a new Model or `pulumi up`. The role
  reads only that prefix: what ops copied there is what can be served, not every trained run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components._base import Component
from infra.components._iam import (
    AwsContext,
    assume_role_policy,
    document,
    ecr_pull_statements,
    kms_via_s3_statement,
    kms_volume_statement,
    sagemaker_observability_statements,
    statement,
    vpc_interface_statements,
)
from infra.components.endpoint_scaling import VARIANT, create_backlog_scaling, create_invocation_scaling
from infra.instance_storage import has_instance_storage

MODELS_PREFIX = "models/"
"""Where trained models live in the artifacts bucket (ops/aws/runs.py writes models/<run-id>/model.tar.gz)."""
MULTI_MODEL_PREFIX = "multi-model/models/"
"""A multi-model endpoint's model data: `make deploy` copies a run to multi-model/models/<run-id>.tar.gz, which requests
name as TargetModel "<run-id>.tar.gz". Apart from models/, so only deployed runs are servable."""
ASYNC_PREFIX = "async/"
"""Where async requests (input/), results (output/) and failures (failures/) live in the artifacts bucket."""


@dataclass
class InferenceEndpointArgs:
    aws: AwsContext
    endpoint_name: str
    """Fixed name of the endpoint (and of its log group, /aws/sagemaker/Endpoints/<name>)."""

    artifacts_bucket: pulumi.Input[str]
    artifacts_bucket_arn: pulumi.Input[str]
    model_key: str | None
    """Key of model.tar.gz in the artifacts bucket, under models/ (the only prefix the role may read); None for a
    multi-model endpoint, whose models are under MULTI_MODEL_PREFIX."""

    image: pulumi.Input[str]
    repository_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]
    instance_type: str
    instance_count: int
    min_instances: int
    max_instances: int
    invocations_per_instance: int
    rollout: str
    """CANARY, LINEAR or ALL_AT_ONCE."""

    rollout_step_instances: int
    bake_seconds: int
    latency_alarm_ms: int
    errors_5xx_alarm: int
    mode: str = "realtime"
    """realtime, serverless, async or multi-model (module docstring)."""

    model_cache_setting: str = "Enabled"
    """multi-model: MultiModelConfig.ModelCacheSetting (Enabled or Disabled)."""

    serverless_memory_mb: int = 2048
    serverless_max_concurrency: int = 5
    async_backlog_per_instance: int = 5


class InferenceEndpoint(Component[InferenceEndpointArgs]):
    endpoint_name: pulumi.Output[str]
    endpoint_config_name: pulumi.Output[str]
    model_name: pulumi.Output[str]
    model_data_url: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    async_prefix: pulumi.Output[str] | None
    """s3://<artifacts>/async/ for an async endpoint (requests under input/, results under output/), else None."""
    models_prefix: pulumi.Output[str] | None
    """s3://<artifacts>/multi-model/models/ for a multi-model endpoint (what it can serve), else None."""

    def __init__(self, name: str, args: InferenceEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        multi = args.mode == "multi-model"
        self.models_prefix = (
            pulumi.Output.concat("s3://", args.artifacts_bucket, "/", MULTI_MODEL_PREFIX) if multi else None
        )
        self.model_data_url = (
            self.models_prefix
            if self.models_prefix is not None
            else pulumi.Output.concat("s3://", args.artifacts_bucket, "/", args.model_key or "")
        )
        self.async_prefix = (
            pulumi.Output.concat("s3://", args.artifacts_bucket, "/", ASYNC_PREFIX) if args.mode == "async" else None
        )
        alarms = [] if args.mode == "serverless" else self._create_alarms()
        role, role_policy = self._create_role(alarms)
        model = self._create_model(role, role_policy)
        config = self._create_endpoint_config(model)
        endpoint = self._create_endpoint(config, alarms)
        if args.mode in ("realtime", "multi-model"):
            bounds = (args.min_instances, args.max_instances)
            create_invocation_scaling(
                name, endpoint, args.endpoint_name, bounds, args.invocations_per_instance, self._child
            )
        elif args.mode == "async":
            create_backlog_scaling(
                name, endpoint, args.endpoint_name, args.max_instances, args.async_backlog_per_instance, self._child
            )
        self.endpoint_name = endpoint.name
        self.endpoint_config_name = config.name
        self.model_name = model.name
        self.role_arn = role.arn
        self.register_outputs(
            {
                "endpoint_name": self.endpoint_name,
                "endpoint_config_name": self.endpoint_config_name,
                "model_name": self.model_name,
                "model_data_url": self.model_data_url,
                "async_prefix": self.async_prefix,
                "models_prefix": self.models_prefix,
            }
        )

    def _create_alarms(self) -> list[aws.cloudwatch.MetricAlarm]:
        """The rollback triggers, on the fixed endpoint name so they exist before the endpoint does."""
        args = self._args
        dimensions = {"EndpointName": args.endpoint_name, "VariantName": VARIANT}
        errors = aws.cloudwatch.MetricAlarm(
            f"{self._name}-5xx",
            alarm_description=f"{args.endpoint_name}: 5XX invocation errors; rolls back a deployment",
            namespace="AWS/SageMaker",
            metric_name="Invocation5XXErrors",
            dimensions=dimensions,
            statistic="Sum",
            period=60,
            evaluation_periods=1,
            threshold=args.errors_5xx_alarm,
            comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching",
            opts=self._child(),
        )
        latency = aws.cloudwatch.MetricAlarm(
            f"{self._name}-latency",
            alarm_description=f"{args.endpoint_name}: model latency; rolls back a deployment",
            namespace="AWS/SageMaker",
            metric_name="ModelLatency",
            dimensions=dimensions,
            statistic="Average",
            period=60,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            threshold=args.latency_alarm_ms * 1000,  # ModelLatency is in microseconds
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            opts=self._child(),
        )
        return [errors, latency]

    def _create_role(self, alarms: Sequence[aws.cloudwatch.MetricAlarm]) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        args = self._args
        # Every trained model, not only the configured one: a retained model that a rollback put back into service
        # must still be downloadable when auto scaling or a SageMaker patch launches an instance for it.

        def under(prefix: str) -> pulumi.Output[str]:
            return pulumi.Output.concat(args.artifacts_bucket_arn, "/", prefix, "*")

        # multi-model: only its own prefix (least privilege; the trained runs under models/ are not its to read).
        models = MULTI_MODEL_PREFIX if args.mode == "multi-model" else MODELS_PREFIX
        statements = [
            statement("ReadModels", ["s3:GetObject"], [under(models)]),
            statement(
                "ListModels",
                ["s3:ListBucket"],
                [args.artifacts_bucket_arn],
                {"StringLike": {"s3:prefix": [f"{models}*"]}},
            ),
            *ecr_pull_statements(args.repository_arn),
            *sagemaker_observability_statements(args.aws, f"/aws/sagemaker/Endpoints/{args.endpoint_name}"),
        ]
        if args.mode == "async":
            # SageMaker reads a request from input/ and writes its result or failure, encrypted with the stack's key.
            statements += [
                statement("ReadAsyncRequests", ["s3:GetObject"], [under(f"{ASYNC_PREFIX}input/")]),
                statement(
                    "WriteAsyncResults",
                    ["s3:PutObject"],
                    [under(f"{ASYNC_PREFIX}output/"), under(f"{ASYNC_PREFIX}failures/")],
                ),
                kms_via_s3_statement(args.key_arn, args.aws.region, ["kms:Decrypt", "kms:GenerateDataKey"]),
            ]
        else:
            statements.append(kms_via_s3_statement(args.key_arn, args.aws.region, ["kms:Decrypt"]))
        if args.mode != "serverless":  # a serverless endpoint has no volume of ours, no alarms and no VPC
            statements += [
                kms_volume_statement(args.key_arn),
                statement("ReadRollbackAlarms", ["cloudwatch:DescribeAlarms"], [alarm.arn for alarm in alarms]),
                *vpc_interface_statements(args.aws, args.subnet_ids, args.security_group_id),
            ]
        policy = document(*statements)
        role = aws.iam.Role(
            f"{self._name}-sagemaker",
            description=f"SageMaker endpoint {args.endpoint_name}: trained models, one image, its logs",
            assume_role_policy=assume_role_policy("sagemaker.amazonaws.com"),
            opts=self._child(),
        )
        role_policy = aws.iam.RolePolicy(f"{self._name}-sagemaker", role=role.id, policy=policy, opts=self._child())
        return role, role_policy

    def _create_model(self, role: aws.iam.Role, role_policy: aws.iam.RolePolicy) -> aws.sagemaker.Model:
        args = self._args
        serverless = args.mode == "serverless"
        container: aws.sagemaker.ModelPrimaryContainerArgsDict = {
            "image": args.image,
            "model_data_url": self.model_data_url,
            "mode": "SingleModel",
        }
        if args.mode == "multi-model":  # ContainerDefinition Mode, ModelDataUrl (a prefix), MultiModelConfig
            container["mode"] = "MultiModel"
            container["multi_model_config"] = {"model_cache_setting": args.model_cache_setting}
        vpc: aws.sagemaker.ModelVpcConfigArgsDict = {
            "subnets": args.subnet_ids,
            "security_group_ids": [args.security_group_id],
        }
        # No name: auto-naming lets a changed model be created beside the old one.
        return aws.sagemaker.Model(
            f"{self._name}-model",
            execution_role_arn=role.arn,
            primary_container=container,
            # serverless: SageMaker offers neither network isolation nor a VPC there (waivers.toml says so).
            enable_network_isolation=not serverless,
            vpc_config=None if serverless else vpc,
            # depends_on the role's policy: SageMaker checks the role can read the model and image at creation.
            # retain_on_delete: a replaced model may be the one a rolled-back endpoint serves (module docstring).
            opts=self._child(depends_on=[role_policy], retain_on_delete=True),
        )

    def _create_endpoint_config(self, model: aws.sagemaker.Model) -> aws.sagemaker.EndpointConfiguration:
        args = self._args
        variant: aws.sagemaker.EndpointConfigurationProductionVariantArgsDict = {
            "variant_name": VARIANT,
            "model_name": model.name,
        }
        asynchronous: aws.sagemaker.EndpointConfigurationAsyncInferenceConfigArgsDict | None = None
        key: pulumi.Input[str] | None = None
        if args.mode == "serverless":
            variant["serverless_config"] = {
                "memory_size_in_mb": args.serverless_memory_mb,
                "max_concurrency": args.serverless_max_concurrency,
            }
        else:
            # async starts with one instance (SageMaker's minimum) and auto scaling takes it to zero when idle.
            variant["instance_type"] = args.instance_type
            variant["initial_instance_count"] = 1 if args.mode == "async" else args.instance_count
            # no key for local NVMe storage: SageMaker refuses one (hardware-encrypted; infra/instance_storage.py)
            key = None if has_instance_storage(args.instance_type) else args.key_arn
        if args.mode == "async":
            prefix = pulumi.Output.concat("s3://", args.artifacts_bucket, "/", ASYNC_PREFIX)
            asynchronous = {
                "output_config": {
                    "s3_output_path": pulumi.Output.concat(prefix, "output/"),
                    "s3_failure_path": pulumi.Output.concat(prefix, "failures/"),
                    "kms_key_id": args.key_arn,
                }
            }
        # No name: auto-naming creates the replacement configuration beside the old one.
        return aws.sagemaker.EndpointConfiguration(
            f"{self._name}-config",
            kms_key_arn=key,
            production_variants=[variant],
            async_inference_config=asynchronous,
            # retain_on_delete: a replaced configuration may be the one a rolled-back endpoint serves (docstring).
            opts=self._child(retain_on_delete=True),
        )

    def _create_endpoint(
        self, config: aws.sagemaker.EndpointConfiguration, alarms: Sequence[aws.cloudwatch.MetricAlarm]
    ) -> aws.sagemaker.Endpoint:
        args = self._args
        deployment: aws.sagemaker.EndpointDeploymentConfigArgsDict | None = None
        if args.mode != "serverless":  # guardrails apply to real-time and async endpoints only (SageMaker guide)
            rollout = "ALL_AT_ONCE" if args.mode == "async" else args.rollout
            routing: aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyTrafficRoutingConfigurationArgsDict = {
                "type": rollout,
                "wait_interval_in_seconds": args.bake_seconds,
            }
            if rollout == "CANARY":
                routing["canary_size"] = {"type": "INSTANCE_COUNT", "value": args.rollout_step_instances}
            elif rollout == "LINEAR":
                routing["linear_step_size"] = {"type": "INSTANCE_COUNT", "value": args.rollout_step_instances}
            deployment = {
                "blue_green_update_policy": {
                    "traffic_routing_configuration": routing,
                    "termination_wait_in_seconds": args.bake_seconds,
                },
                "auto_rollback_configuration": {"alarms": [{"alarm_name": alarm.name} for alarm in alarms]},
            }
        return aws.sagemaker.Endpoint(
            f"{self._name}-endpoint",
            name=args.endpoint_name,  # fixed: updated in place (blue/green), never replaced
            endpoint_config_name=config.name,
            deployment_config=deployment,
            opts=self._child(),
        )
