"""AWS Lambda: on a spot interruption warning for an instance of the training cluster, stop the tasks it runs.

EC2 emits "EC2 Spot Instance Interruption Warning" to EventBridge two minutes before it reclaims a spot instance
(EC2 guide, "Spot Instance interruption notices"). The ECS agent drains the instance (ECS_ENABLE_SPOT_INSTANCE_DRAINING;
amazon-ecs-agent agent/app/agent.go, spotInstanceDrainingPoller), but draining stops only service tasks: "Standalone
tasks that are in the PENDING or RUNNING state are not affected; you must wait for them to stop on their own or stop
them manually" (ECS guide, "Draining Amazon ECS container instances"), and ECS_AWSVPC_BLOCK_IMDS keeps the task from
reading the notice itself. StopTask sends the container SIGTERM now and SIGKILL after its stopTimeout (120 s for the
trainer), so the trainer checkpoints and exits 143 within the notice; the reason it is given here is what
DescribeTasks reports as stoppedReason, which `make train` reads to call the run interrupted (ops/aws/training/ecs.py).

Packaged alone by infra/components/spot_interruption.py; the Lambda runtime provides boto3. The cluster comes from
the CLUSTER environment variable.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

DETAIL_TYPE = "EC2 Spot Instance Interruption Warning"
REASON_PREFIX = "EC2 spot interruption"
"""Start of the StopTask reason, so ops can tell this stop from its own (MAX_COST, Ctrl-C, make destroy)."""
CLUSTER_ENV = "CLUSTER"


def stop_reason(instance_id: str) -> str:
    """The StopTask reason (at most 255 characters, as the ECS API takes)."""
    return f"{REASON_PREFIX} of {instance_id}: stopped to checkpoint before the instance is reclaimed"[:255]


def container_instance(ecs: Any, cluster: str, instance_id: str) -> str | None:
    """The ARN of the cluster's container instance on EC2 instance `instance_id`, or None (not one of ours).
    ListContainerInstances includes DRAINING instances (every state but INACTIVE), which a warned one already is."""
    for page in ecs.get_paginator("list_container_instances").paginate(cluster=cluster):
        arns = page.get("containerInstanceArns", [])
        if not arns:
            continue
        for found in ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]:
            if found.get("ec2InstanceId") == instance_id:
                return found["containerInstanceArn"]
    return None


def handler(event: dict, context: Any = None, ecs: Any = None) -> dict:
    """Stop every task of the cluster on the warned instance; what was stopped, as JSON for the function's log."""
    instance_id = (event.get("detail") or {}).get("instance-id")
    result: dict[str, Any] = {"instance": instance_id, "stopped": []}
    if event.get("detail-type") != DETAIL_TYPE or not instance_id:
        result["ignored"] = "not a spot interruption warning"
    else:
        cluster = os.environ[CLUSTER_ENV]
        ecs = ecs or boto3.client("ecs")
        arn = container_instance(ecs, cluster, instance_id)
        if arn is None:
            result["ignored"] = f"not a container instance of {cluster}"
        else:
            # desiredStatus RUNNING (the default) also lists tasks still PENDING on the instance
            pages = ecs.get_paginator("list_tasks").paginate(
                cluster=cluster, containerInstance=arn, desiredStatus="RUNNING"
            )
            for task in [t for page in pages for t in page.get("taskArns", [])]:
                ecs.stop_task(cluster=cluster, task=task, reason=stop_reason(instance_id))
                result["stopped"].append(task)
    print(json.dumps(result))  # the function's log group
    return result
