"""Application Auto Scaling of an InferenceEndpoint's one variant: invocations per instance for the instance-based
modes, the request backlog (down to zero instances) for async.

Functions rather than a component of their own: the target, policies and alarm stay children of the InferenceEndpoint
(`child` is its Component._child), so they keep the URNs they have always had.
"""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_aws as aws

VARIANT = "AllTraffic"
"""The one production variant; blue/green requires the same variant name in old and new configurations."""
ASYNC_SCALE_IN_COOLDOWN_S = 600
"""Async: seconds after a scale-in before the next one (the value of the SageMaker guide's example policy)."""
ASYNC_SCALE_OUT_COOLDOWN_S = 300
"""Async: seconds after a scale-out before the next one (the SageMaker guide's example policy)."""

Child = Callable[..., pulumi.ResourceOptions]
"""Options for a child of the endpoint component, with extra options as keywords."""


def _create_scaling(
    name: str,
    endpoint: aws.sagemaker.Endpoint,
    bounds: tuple[int, int],
    policy: str,
    tracking: aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgsDict,
    child: Child,
) -> aws.appautoscaling.Target:
    """The variant's scalable target between `bounds` (min, max), with a target tracking policy named `policy`."""
    target = aws.appautoscaling.Target(
        f"{name}-scaling",
        service_namespace="sagemaker",
        scalable_dimension="sagemaker:variant:DesiredInstanceCount",
        resource_id=pulumi.Output.concat("endpoint/", endpoint.name, "/variant/", VARIANT),
        min_capacity=bounds[0],
        max_capacity=bounds[1],
        opts=child(),
    )
    aws.appautoscaling.Policy(
        f"{name}-scaling",
        name=policy,
        policy_type="TargetTrackingScaling",
        target_tracking_scaling_policy_configuration=tracking,
        opts=child(),
        service_namespace=target.service_namespace,
        scalable_dimension=target.scalable_dimension,
        resource_id=target.resource_id,
    )
    return target


def create_invocation_scaling(
    name: str,
    endpoint: aws.sagemaker.Endpoint,
    endpoint_name: str,
    bounds: tuple[int, int],
    invocations_per_instance: int,
    child: Child,
) -> None:
    """Realtime and multi-model: between `bounds`, tracking invocations per instance per minute."""
    _create_scaling(
        name,
        endpoint,
        bounds,
        f"{endpoint_name}-invocations",
        {
            "target_value": invocations_per_instance,
            "predefined_metric_specification": {"predefined_metric_type": "SageMakerVariantInvocationsPerInstance"},
            "scale_in_cooldown": 300,
            "scale_out_cooldown": 60,
        },
        child,
    )


def create_backlog_scaling(
    name: str,
    endpoint: aws.sagemaker.Endpoint,
    endpoint_name: str,
    max_instances: int,
    backlog_per_instance: int,
    child: Child,
) -> None:
    """Async: between 0 and `max_instances`, target tracking on the backlog per instance scales in (to zero) and out
    while there are instances; a step policy, fired by an alarm on HasBacklogWithoutCapacity, adds the first one when a
    request waits at zero. Both as in the SageMaker guide, "Autoscale an asynchronous endpoint"."""
    # min 0: async endpoints may scale to zero instances; requests queue meanwhile.
    target = _create_scaling(
        name,
        endpoint,
        (0, max_instances),
        f"{endpoint_name}-backlog",
        {
            "target_value": backlog_per_instance,
            "customized_metric_specification": {
                "metric_name": "ApproximateBacklogSizePerInstance",
                "namespace": "AWS/SageMaker",
                "dimensions": [{"name": "EndpointName", "value": endpoint_name}],
                "statistic": "Average",
            },
            "scale_in_cooldown": ASYNC_SCALE_IN_COOLDOWN_S,
            "scale_out_cooldown": ASYNC_SCALE_OUT_COOLDOWN_S,
        },
        child,
    )
    from_zero = aws.appautoscaling.Policy(
        f"{name}-from-zero",
        name=f"{endpoint_name}-from-zero",
        policy_type="StepScaling",
        step_scaling_policy_configuration={
            "adjustment_type": "ChangeInCapacity",
            "metric_aggregation_type": "Average",
            "cooldown": ASYNC_SCALE_OUT_COOLDOWN_S,
            "step_adjustments": [{"metric_interval_lower_bound": "0", "scaling_adjustment": 1}],
        },
        opts=child(),
        service_namespace=target.service_namespace,
        scalable_dimension=target.scalable_dimension,
        resource_id=target.resource_id,
    )
    aws.cloudwatch.MetricAlarm(
        f"{name}-backlog-without-capacity",
        alarm_description=f"{endpoint_name}: a request waits with no instance; adds the first one",
        namespace="AWS/SageMaker",
        metric_name="HasBacklogWithoutCapacity",
        dimensions={"EndpointName": endpoint_name},
        statistic="Average",
        period=60,
        evaluation_periods=2,
        threshold=1,
        comparison_operator="GreaterThanOrEqualToThreshold",
        treat_missing_data="missing",  # no datapoints while idle: keep the last state, do not fire
        alarm_actions=[from_zero.arn],
        opts=child(),
    )
