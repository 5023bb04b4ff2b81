"""SageMaker: isolated models in the VPC, encrypted endpoint storage and async results, guarded blue/green
deployments, and endpoints that scale to zero able to scale back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import EnforcementLevel, PolicyResource

from infra.instance_storage import has_instance_storage
from infra.policy._core import as_list, get, is_true, linked, of_type, resource_rule, stack_rule

MODEL = "aws:sagemaker/model:Model"
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"


@resource_rule(
    "sagemaker-network-isolation",
    "SageMaker models run with network isolation",
    [MODEL],
    ["Checkov CKV_AWS_370", "AWS Config sagemaker-model-isolation-enabled"],
)
def network_isolation(resource) -> Iterator[str]:
    if not is_true(get(resource.props, "enableNetworkIsolation")):
        yield "needs enableNetworkIsolation true"


@resource_rule(
    "sagemaker-model-in-vpc", "SageMaker models run in the stack's VPC", [MODEL], ["AWS Config sagemaker-model-in-vpc"]
)
def model_in_vpc(resource) -> Iterator[str]:
    if not as_list(get(resource.props, "vpcConfig", "subnets")) or not as_list(
        get(resource.props, "vpcConfig", "securityGroupIds")
    ):
        yield "needs vpcConfig with subnets and securityGroupIds"


@resource_rule(
    "sagemaker-endpoint-config-kms",
    "SageMaker endpoint configurations encrypt instance storage with KMS",
    [ENDPOINT_CONFIG],
    ["Checkov CKV_AWS_98", "AWS Config sagemaker-endpoint-configuration-kms-key-configured"],
)
def endpoint_config_kms(resource) -> Iterator[str]:
    types = [get(v, "instanceType", default="") for v in as_list(get(resource.props, "productionVariants"))]
    if types and all(has_instance_storage(t) for t in types):
        return  # SageMaker refuses a KmsKeyId for NVMe instance storage, which is encrypted in hardware
    if not get(resource.props, "kmsKeyArn"):
        yield "needs kmsKeyArn"


@resource_rule(
    "sagemaker-endpoint-redundancy",
    "SageMaker endpoints start with more than one instance",
    [ENDPOINT_CONFIG],
    ["AWS Config sagemaker-endpoint-config-prod-instance-count"],
    enforcement=EnforcementLevel.ADVISORY,
)
def endpoint_redundancy(resource) -> Iterator[str]:
    for variant in as_list(get(resource.props, "productionVariants")):
        count = get(variant, "initialInstanceCount")
        if count is not None and int(count) < 2:
            yield f"variant {get(variant, 'variantName')} starts with {count} instance; one failure takes it down"


@resource_rule(
    "sagemaker-blue-green-rollback",
    "SageMaker endpoints update blue/green and roll back on alarms",
    [ENDPOINT],
    ["AWS SageMaker deployment guardrails"],
)
def blue_green_rollback(resource) -> Iterator[str]:
    routing = get(resource.props, "deploymentConfig", "blueGreenUpdatePolicy", "trafficRoutingConfiguration", "type")
    if routing not in ("CANARY", "LINEAR", "ALL_AT_ONCE"):
        yield "needs deploymentConfig.blueGreenUpdatePolicy with a traffic routing type"
    alarms = as_list(get(resource.props, "deploymentConfig", "autoRollbackConfiguration", "alarms"))
    if not [a for a in alarms if get(a, "alarmName")]:
        yield "needs deploymentConfig.autoRollbackConfiguration with at least one alarm"


SCALING_TARGET = "aws:appautoscaling/target:Target"
SCALING_POLICY = "aws:appautoscaling/policy:Policy"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@resource_rule(
    "sagemaker-async-output-encrypted",
    "SageMaker async endpoints write results and failures to S3 encrypted with a customer KMS key",
    [ENDPOINT_CONFIG],
    ["SageMaker guide, asynchronous inference output (AsyncInferenceOutputConfig)", "AWS FSBP S3 encryption at rest"],
)
def async_output_encrypted(resource) -> Iterator[str]:
    output = get(resource.props, "asyncInferenceConfig", "outputConfig")
    if get(resource.props, "asyncInferenceConfig") is None:
        return
    if not get(output, "kmsKeyId"):
        yield "needs asyncInferenceConfig.outputConfig.kmsKeyId (results hold the model's answers)"
    for path in ("s3OutputPath", "s3FailurePath"):
        if not str(get(output, path, default="")).startswith("s3://"):
            yield f"needs asyncInferenceConfig.outputConfig.{path} (an s3:// prefix of the stack's bucket)"


@stack_rule(
    "sagemaker-scale-out-from-zero",
    "A SageMaker variant that auto scaling may take to zero instances has a policy that brings it back",
    ['SageMaker guide, "Autoscale an asynchronous endpoint" (scale up from zero)'],
)
def scale_out_from_zero(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for target in of_type(resources, SCALING_TARGET):
        if get(target.props, "serviceNamespace") != "sagemaker" or get(target.props, "minCapacity") != 0:
            continue
        steps = [
            p
            for p in linked(resources, target, SCALING_POLICY, "resourceId")
            if get(p.props, "policyType") == "StepScaling"
        ]
        fired = [
            a
            for p in steps
            for a in linked(resources, p, METRIC_ALARM, "alarmActions")
            if get(a.props, "metricName") == "HasBacklogWithoutCapacity"
        ]
        if not fired:
            yield (
                target,
                (
                    "scales to 0 but no HasBacklogWithoutCapacity alarm fires a step scaling policy on it: "
                    "target tracking alone never adds the first instance back"
                ),
            )
