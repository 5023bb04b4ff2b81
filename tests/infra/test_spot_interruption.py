"""SpotInterruption: the EventBridge rule and the function that stop a spot instance's training tasks in time.

The function (infra/functions/spot_interruption/handler.py) runs here in-process with real boto3 over HTTP against
`moto_server` on 127.0.0.1, whose ECS keeps container instances, tasks, StopTask's reason and the stopped state.
The rule's pattern is matched by moto's implementation of EventBridge patterns against the example event in the EC2
guide ("Spot Instance interruption notices"). The stack's resources are read from the program under mocks.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto.events.models import EventPattern

from infra.components.spot_interruption import EVENT_PATTERN, FUNCTION_DIR, HANDLER, NOTICE_S
from infra.functions.spot_interruption import handler as spot
from tests.infra.harness import Synthesis, policy_json

REGION = "us-east-1"
WARNING = {  # the EC2 guide's example, with its placeholders filled in
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789012",
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-01-01T12:00:00Z",
    "region": REGION,
    "resources": ["arn:aws:ec2:us-east-1a:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"},
}


@pytest.fixture
def ecs(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Any:
    """boto3 pointed at moto_server the way the Lambda runtime points it at AWS: region and credentials from the
    environment, no endpoint argument in the handler (AWS_ENDPOINT_URL does it here)."""
    environment = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("ecs")


def instance_with_task(ecs: Any, cluster: str, family: str) -> tuple[str, str]:
    """An EC2 instance registered in `cluster` with one running task on it: (instance id, task ARN)."""
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")["Instances"][
        0
    ]["InstanceId"]
    document = json.dumps({"instanceId": instance, "instanceType": "g5.xlarge", "region": REGION})
    registered = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=document)
    task = ecs.start_task(
        cluster=cluster,
        taskDefinition=family,
        startedBy="train-1",
        containerInstances=[registered["containerInstance"]["containerInstanceArn"]],
    )
    return instance, task["tasks"][0]["taskArn"]


@pytest.fixture
def cluster(ecs: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    name = f"gpu-{abs(hash(request.node.name)) % 10**8}"
    ecs.create_cluster(clusterName=name)
    # bridge networking: moto 5.2.5's task placement fails for awsvpc
    ecs.register_task_definition(
        family=f"{name}-trainer",
        networkMode="bridge",
        containerDefinitions=[{"name": "trainer", "image": "trainer:1", "memory": 512}],
    )
    monkeypatch.setenv(spot.CLUSTER_ENV, name)
    return name


def described(ecs: Any, cluster: str, task: str) -> dict:
    """DescribeTasks; StopTask sets desiredStatus STOPPED and stoppedReason (moto then walks lastStatus through
    DEACTIVATING, STOPPING, ... on each describe, as ECS's task lifecycle does)."""
    return ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"][0]


def test_a_warning_stops_the_tasks_on_that_instance_only(ecs: Any, cluster: str) -> None:
    warned, task = instance_with_task(ecs, cluster, f"{cluster}-trainer")
    _, other = instance_with_task(ecs, cluster, f"{cluster}-trainer")

    result = spot.handler({**WARNING, "detail": {**WARNING["detail"], "instance-id": warned}})

    assert result["stopped"] == [task]
    stopped = described(ecs, cluster, task)
    assert stopped["desiredStatus"] == "STOPPED"
    assert stopped["stoppedReason"] == spot.stop_reason(warned)
    assert stopped["stoppedReason"].startswith(spot.REASON_PREFIX), "what ops reads to call the run interrupted"
    assert len(stopped["stoppedReason"]) <= 255
    assert described(ecs, cluster, other)["desiredStatus"] == "RUNNING"
    assert not described(ecs, cluster, other).get("stoppedReason")


def test_an_instance_of_another_cluster_is_left_alone(ecs: Any, cluster: str) -> None:
    ecs.create_cluster(clusterName=f"{cluster}-other")
    ecs.register_task_definition(
        family=f"{cluster}-web",
        networkMode="bridge",
        containerDefinitions=[{"name": "web", "image": "web:1", "memory": 256}],
    )
    elsewhere, task = instance_with_task(ecs, f"{cluster}-other", f"{cluster}-web")
    result = spot.handler({**WARNING, "detail": {**WARNING["detail"], "instance-id": elsewhere}})
    assert result["stopped"] == []
    assert result["ignored"] == f"not a container instance of {cluster}"
    assert described(ecs, f"{cluster}-other", task)["desiredStatus"] == "RUNNING"


def test_other_events_do_nothing(ecs: Any, cluster: str) -> None:
    assert spot.handler({"detail-type": "EC2 Instance State-change Notification", "detail": {}})["stopped"] == []


def test_the_rule_matches_the_warning_and_nothing_else() -> None:
    pattern = EventPattern.load(json.dumps(EVENT_PATTERN))
    assert pattern.matches_event(WARNING)
    assert pattern.matches_event({**WARNING, "detail": {**WARNING["detail"], "instance-action": "stop"}})
    assert not pattern.matches_event({**WARNING, "detail-type": "EC2 Instance Rebalance Recommendation"})
    assert not pattern.matches_event({**WARNING, "detail-type": "EC2 Instance State-change Notification"})


# --- the stack ---------------------------------------------------------------------------------------------
def test_the_rule_invokes_the_packaged_function(default_stack: Synthesis) -> None:
    rule = default_stack.one("aws:cloudwatch/eventRule:EventRule")
    assert json.loads(rule.inputs["eventPattern"]) == EVENT_PATTERN
    function = default_stack.one("aws:lambda/function:Function")
    target = default_stack.one("aws:cloudwatch/eventTarget:EventTarget")
    assert target.inputs["rule"] == rule.outputs["name"]
    assert target.inputs["arn"] == function.outputs["arn"]
    assert target.inputs["retryPolicy"]["maximumEventAgeInSeconds"] == NOTICE_S
    permission = default_stack.one("aws:lambda/permission:Permission").inputs
    assert (permission["principal"], permission["sourceArn"]) == ("events.amazonaws.com", rule.outputs["arn"])
    assert permission["function"] == function.outputs["name"]
    code = function.inputs["code"]
    assert {name: asset.path for name, asset in code.assets.items()} == {"handler.py": str(FUNCTION_DIR / "handler.py")}
    module, name = HANDLER.split(".")
    assert (module, name) == ("handler", spot.handler.__name__)
    cluster = default_stack.one("aws:ecs/cluster:Cluster")
    assert function.inputs["environment"]["variables"] == {spot.CLUSTER_ENV: cluster.outputs["name"]}
    logs = default_stack.one("aws:cloudwatch/logGroup:LogGroup", "spot-logs")
    assert function.inputs["loggingConfig"]["logGroup"] == logs.outputs["name"]
    assert logs.inputs["kmsKeyId"] == default_stack.one("aws:kms/key:Key").outputs["arn"]
    assert "reservedConcurrentExecutions" not in function.inputs, "a new account may have no concurrency to reserve"


def test_the_function_may_stop_only_its_clusters_tasks(default_stack: Synthesis) -> None:
    cluster = default_stack.one("aws:ecs/cluster:Cluster").outputs
    policy = policy_json(default_stack.one("aws:iam/rolePolicy:RolePolicy", "spot-function").inputs["policy"])
    allowed = {s["Sid"]: s for s in policy["Statement"]}
    assert allowed["ListClusterInstances"]["Resource"] == [cluster["arn"]]
    assert allowed["StopClusterTasks"]["Action"] == ["ecs:StopTask"]
    assert allowed["StopClusterTasks"]["Resource"] == [f"arn:aws:ecs:eu-west-1:123456789012:task/{cluster['name']}/*"]
    assert allowed["StopClusterTasks"]["Condition"] == {"ArnEquals": {"ecs:cluster": cluster["arn"]}}
    actions = {a for s in allowed.values() for a in s["Action"]}
    assert actions == {
        "ecs:ListContainerInstances",
        "ecs:DescribeContainerInstances",
        "ecs:ListTasks",
        "ecs:StopTask",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert not [s for s in allowed.values() if s["Resource"] == "*"]


def test_the_trainer_can_checkpoint_within_the_notice(default_stack: Synthesis) -> None:
    """StopTask: SIGTERM now, SIGKILL after the container's stopTimeout; both within EC2's two-minute notice."""
    (container,) = json.loads(default_stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"])
    assert container["stopTimeout"] <= NOTICE_S
