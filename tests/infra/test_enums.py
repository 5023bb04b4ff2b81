"""Every AWS enum the stack uses, checked against botocore's service models (shipped with boto3).

A typo in an instance type, an allocation strategy or a metric name would otherwise surface only as a
failed `pulumi up` against AWS. Two kinds of checks: the config defaults (and the value lists config.py
accepts), and the literal values in the synthesized stack, which is where the components' own constants end
up. Where the model has no enum for a field, the valid values are read from its documentation.
"""

from __future__ import annotations

import functools
import json
import re

import botocore.session
import pytest

from infra.config import ROLLOUTS, SPOT_ALLOCATION_STRATEGIES, VOLUME_TYPES, parse
from tests.infra.harness import Synthesis

DEFAULTS = parse({}, project="deepcloud", stack="dev", region="eu-west-1")


@functools.cache
def model(service: str):
    return botocore.session.get_session().get_service_model(service)


def enum(service: str, shape: str) -> set[str]:
    values = model(service).shape_for(shape).enum
    assert values, f"{service} {shape} has no enum in botocore"
    return set(values)


def documented(service: str, shape: str, member: str, pattern: str) -> set[str]:
    """Values a member's documentation lists, for fields the model types as a plain string."""
    text = model(service).shape_for(shape).members[member].documentation
    found = set(re.findall(pattern, text))
    assert found, f"no values found in the documentation of {service} {shape}.{member}"
    return found


# --- config defaults and accepted values ---------------------------------------------------------------------
def test_default_gpu_instance_types_exist() -> None:
    unknown = set(DEFAULTS.gpu_instance_types) - enum("ec2", "InstanceType")
    assert not unknown, f"not EC2 instance types: {unknown}"


def test_default_endpoint_instance_type_exists() -> None:
    assert DEFAULTS.endpoint_instance_type in enum("sagemaker", "ProductionVariantInstanceType")


def test_volume_types() -> None:
    assert DEFAULTS.root_volume_type in VOLUME_TYPES
    assert set(VOLUME_TYPES) <= enum("ec2", "VolumeType")


def test_spot_allocation_strategies() -> None:
    listed = documented(
        "autoscaling", "InstancesDistribution", "SpotAllocationStrategy", r"<dt>([a-z-]+(?: \(recommended\))?)</dt>"
    )
    valid = {v.removesuffix(" (recommended)") for v in listed}
    assert DEFAULTS.spot_allocation_strategy in SPOT_ALLOCATION_STRATEGIES
    assert set(SPOT_ALLOCATION_STRATEGIES) == valid


def test_rollouts() -> None:
    assert DEFAULTS.rollout in ROLLOUTS
    assert set(ROLLOUTS) == enum("sagemaker", "TrafficRoutingConfigType")


def test_log_retention_days() -> None:
    from infra.config import RETENTION_DAYS

    text = model("logs").shape_for("PutRetentionPolicyRequest").members["retentionInDays"].documentation
    listed = re.search(r"Possible values are: ([\d, and]+)\.", text).group(1)
    assert set(RETENTION_DAYS) == {int(v) for v in re.findall(r"\d+", listed)}
    assert DEFAULTS.log_retention_days in RETENTION_DAYS


def test_gpu_ami_parameter_is_the_ecs_gpu_one() -> None:
    assert DEFAULTS.gpu_ami_parameter.startswith("/aws/service/ecs/optimized-ami/")
    assert "/gpu/recommended/image_id" in DEFAULTS.gpu_ami_parameter


# --- literals in the synthesized stack -------------------------------------------------------------------------
def _values(stack: Synthesis, token: str, *path: str | int) -> list:
    out = []
    for resource in stack.of_type(token):
        value = resource.inputs
        for step in path:
            value = value[step]
        out.append(value)
    return out


def test_stack_instance_types(any_stack: Synthesis) -> None:
    overrides = _values(any_stack, "aws:autoscaling/group:Group", "mixedInstancesPolicy", "launchTemplate", "overrides")
    assert {o["instanceType"] for group in overrides for o in group} <= enum("ec2", "InstanceType")
    variants = _values(any_stack, "aws:sagemaker/endpointConfiguration:EndpointConfiguration", "productionVariants")
    assert {v["instanceType"] for vs in variants for v in vs} <= enum("sagemaker", "ProductionVariantInstanceType")


def test_stack_ec2_and_autoscaling_values(any_stack: Synthesis) -> None:
    template = any_stack.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] in enum("ec2", "HttpTokensState")
    assert template["metadataOptions"]["httpEndpoint"] in enum("ec2", "InstanceMetadataEndpointState")
    assert {m["ebs"]["volumeType"] for m in template["blockDeviceMappings"]} <= enum("ec2", "VolumeType")
    assert {t["resourceType"] for t in template["tagSpecifications"]} <= enum("ec2", "ResourceType")
    distribution = any_stack.one("aws:autoscaling/group:Group").inputs["mixedInstancesPolicy"]["instancesDistribution"]
    assert distribution["onDemandAllocationStrategy"] in documented(
        "autoscaling", "InstancesDistribution", "OnDemandAllocationStrategy", r"<dt>([a-z-]+)</dt>"
    )
    for endpoint in any_stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
        assert endpoint.inputs["vpcEndpointType"] in enum("ec2", "VpcEndpointType")


def test_stack_ecs_values(any_stack: Synthesis) -> None:
    cluster = any_stack.one("aws:ecs/cluster:Cluster").inputs
    assert {s["name"] for s in cluster["settings"]} <= enum("ecs", "ClusterSettingName")
    assert {s["value"] for s in cluster["settings"]} <= documented(
        "ecs", "ClusterSetting", "value", r"<code>([a-z]+)</code>"
    )
    provider = any_stack.one("aws:ecs/capacityProvider:CapacityProvider").inputs["autoScalingGroupProvider"]
    assert provider["managedTerminationProtection"] in enum("ecs", "ManagedTerminationProtection")
    assert provider["managedDraining"] in enum("ecs", "ManagedDraining")
    assert provider["managedScaling"]["status"] in enum("ecs", "ManagedScalingStatus")
    task = any_stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert task["networkMode"] in enum("ecs", "NetworkMode")
    assert set(task["requiresCompatibilities"]) <= enum("ecs", "Compatibility")
    assert task["runtimePlatform"]["operatingSystemFamily"] in enum("ecs", "OSFamily")
    assert task["runtimePlatform"]["cpuArchitecture"] in enum("ecs", "CPUArchitecture")
    assert {v["dockerVolumeConfiguration"]["scope"] for v in task["volumes"]} <= enum("ecs", "Scope")
    for container in json.loads(task["containerDefinitions"]):
        assert {r["type"] for r in container["resourceRequirements"]} <= enum("ecs", "ResourceType")
        assert container["logConfiguration"]["logDriver"] in enum("ecs", "LogDriver")


def test_stack_storage_values(any_stack: Synthesis) -> None:
    for repo in any_stack.of_type("aws:ecr/repository:Repository"):
        assert repo.inputs["imageTagMutability"] in enum("ecr", "ImageTagMutability")
        assert {c["encryptionType"] for c in repo.inputs["encryptionConfigurations"]} <= enum("ecr", "EncryptionType")
    for policy in any_stack.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy"):
        for rule in json.loads(policy.inputs["policy"])["rules"]:
            # the lifecycle policy document spells the API's TagStatus values in lower case
            assert rule["selection"]["tagStatus"].upper() in enum("ecr", "TagStatus")
    sse = _values(
        any_stack, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "rules"
    )
    assert {r["applyServerSideEncryptionByDefault"]["sseAlgorithm"] for rules in sse for r in rules} <= enum(
        "s3", "ServerSideEncryption"
    )
    versioning = _values(any_stack, "aws:s3/bucketVersioning:BucketVersioning", "versioningConfiguration", "status")
    assert set(versioning) <= enum("s3", "BucketVersioningStatus")
    assert set(
        _values(any_stack, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "rule", "objectOwnership")
    ) <= enum("s3", "ObjectOwnership")
    lifecycle = _values(any_stack, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "rules")
    assert {r["status"] for rules in lifecycle for r in rules} <= enum("s3", "ExpirationStatus")


def test_stack_sagemaker_and_scaling_values(model_stack: Synthesis) -> None:
    routing = model_stack.one("aws:sagemaker/endpoint:Endpoint").inputs["deploymentConfig"]["blueGreenUpdatePolicy"][
        "trafficRoutingConfiguration"
    ]
    assert routing["type"] in enum("sagemaker", "TrafficRoutingConfigType")
    assert routing["canarySize"]["type"] in enum("sagemaker", "CapacitySizeType")
    model_mode = model_stack.one("aws:sagemaker/model:Model").inputs["primaryContainer"]["mode"]
    assert model_mode in enum("sagemaker", "ContainerMode")
    for alarm in model_stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.inputs["comparisonOperator"] in enum("cloudwatch", "ComparisonOperator")
        assert alarm.inputs["statistic"] in enum("cloudwatch", "Statistic")
        valid = documented(
            "cloudwatch", "PutMetricAlarmInput", "TreatMissingData", r"Valid Values: <code>([^<]+)</code>"
        )
        assert alarm.inputs["treatMissingData"] in {v.strip() for vs in valid for v in vs.split("|")}
    target = model_stack.one("aws:appautoscaling/target:Target").inputs
    assert target["serviceNamespace"] in enum("application-autoscaling", "ServiceNamespace")
    assert target["scalableDimension"] in enum("application-autoscaling", "ScalableDimension")
    scaling = model_stack.one("aws:appautoscaling/policy:Policy").inputs
    assert scaling["policyType"] in enum("application-autoscaling", "PolicyType")
    tracking = scaling["targetTrackingScalingPolicyConfiguration"]
    metric = tracking["predefinedMetricSpecification"]["predefinedMetricType"]
    assert metric in enum("application-autoscaling", "MetricType")


@pytest.mark.parametrize("rollout", sorted(ROLLOUTS))
def test_every_rollout_the_config_accepts_is_a_sagemaker_value(rollout: str) -> None:
    assert rollout in enum("sagemaker", "TrafficRoutingConfigType")


def test_stack_lambda_values(default_stack: Synthesis) -> None:
    function = default_stack.one("aws:lambda/function:Function").inputs
    assert function["runtime"] in enum("lambda", "Runtime")
    assert set(function["architectures"]) <= enum("lambda", "Architecture")
    assert function["loggingConfig"]["logFormat"] in enum("lambda", "LogFormat")
    limits = model("lambda").shape_for("FunctionConfiguration").members
    assert model("lambda").shape_for(limits["Timeout"].name).metadata["min"] <= function["timeout"]
    invoke = default_stack.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").inputs
    age = model("lambda").shape_for("MaximumEventAgeInSeconds").metadata
    assert age["min"] <= invoke["maximumEventAgeInSeconds"] <= age["max"]
    target = default_stack.one("aws:cloudwatch/eventTarget:EventTarget").inputs["retryPolicy"]
    age = model("events").shape_for("MaximumEventAgeInSeconds").metadata
    assert age["min"] <= target["maximumEventAgeInSeconds"] <= age["max"]
