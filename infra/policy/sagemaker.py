"""SageMaker: isolated models in the VPC, encrypted endpoint storage, guarded blue/green deployments."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import EnforcementLevel

from infra.instance_storage import has_instance_storage
from infra.policy._core import as_list, get, is_true, resource_rule

MODEL = "aws:sagemaker/model:Model"
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"


@resource_rule("sagemaker-network-isolation", "SageMaker models run with network isolation", [MODEL],
               ["Checkov CKV_AWS_370", "AWS Config sagemaker-model-isolation-enabled"])
def network_isolation(resource) -> Iterator[str]:
    if not is_true(get(resource.props, "enableNetworkIsolation")):
        yield "needs enableNetworkIsolation true"


@resource_rule("sagemaker-model-in-vpc", "SageMaker models run in the stack's VPC", [MODEL],
               ["AWS Config sagemaker-model-in-vpc"])
def model_in_vpc(resource) -> Iterator[str]:
    if not as_list(get(resource.props, "vpcConfig", "subnets")) or not as_list(
            get(resource.props, "vpcConfig", "securityGroupIds")):
        yield "needs vpcConfig with subnets and securityGroupIds"


@resource_rule("sagemaker-endpoint-config-kms", "SageMaker endpoint configurations encrypt instance storage with KMS",
               [ENDPOINT_CONFIG],
               ["Checkov CKV_AWS_98", "AWS Config sagemaker-endpoint-configuration-kms-key-configured"])
def endpoint_config_kms(resource) -> Iterator[str]:
    types = [get(v, "instanceType", default="") for v in as_list(get(resource.props, "productionVariants"))]
    if types and all(has_instance_storage(t) for t in types):
        return  # SageMaker refuses a KmsKeyId for NVMe instance storage, which is encrypted in hardware
    if not get(resource.props, "kmsKeyArn"):
        yield "needs kmsKeyArn"


@resource_rule("sagemaker-endpoint-redundancy", "SageMaker endpoints start with more than one instance",
               [ENDPOINT_CONFIG], ["AWS Config sagemaker-endpoint-config-prod-instance-count"],
               enforcement=EnforcementLevel.ADVISORY)
def endpoint_redundancy(resource) -> Iterator[str]:
    for variant in as_list(get(resource.props, "productionVariants")):
        count = get(variant, "initialInstanceCount")
        if count is not None and int(count) < 2:
            yield f"variant {get(variant, 'variantName')} starts with {count} instance; one failure takes it down"


@resource_rule("sagemaker-blue-green-rollback", "SageMaker endpoints update blue/green and roll back on alarms",
               [ENDPOINT], ["AWS SageMaker deployment guardrails"])
def blue_green_rollback(resource) -> Iterator[str]:
    routing = get(resource.props, "deploymentConfig", "blueGreenUpdatePolicy", "trafficRoutingConfiguration", "type")
    if routing not in ("CANARY", "LINEAR", "ALL_AT_ONCE"):
        yield "needs deploymentConfig.blueGreenUpdatePolicy with a traffic routing type"
    alarms = as_list(get(resource.props, "deploymentConfig", "autoRollbackConfiguration", "alarms"))
    if not [a for a in alarms if get(a, "alarmName")]:
        yield "needs deploymentConfig.autoRollbackConfiguration with at least one alarm"
