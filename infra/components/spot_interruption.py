"""SpotInterruption: SIGTERM for the training tasks on a spot instance EC2 is about to reclaim.

Draining, which the ECS agent starts on the interruption notice, stops only service tasks; a task started with
RunTask keeps running until the instance is gone two minutes later, and loses everything since its last checkpoint
(infra/functions/spot_interruption/handler.py says where each of these comes from). So an EventBridge rule on
"EC2 Spot Instance Interruption Warning" invokes a small function that stops the cluster's tasks on that instance:
StopTask is SIGTERM now, SIGKILL after the trainer's 120 s stop timeout, and the trainer checkpoints and exits in
between. The function's role may list and describe the cluster's container instances and list and stop its tasks,
nothing else; it logs to a log group of its own, with the stack's retention and key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.components._base import Component
from infra.components._iam import (
    AwsContext,
    assume_role_policy,
    document,
    statement,
)

FUNCTION_DIR = Path(__file__).resolve().parent.parent / "functions" / "spot_interruption"
HANDLER = "handler.handler"
RUNTIME = "python3.12"
EVENT_PATTERN = {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}
"""Every spot interruption warning of the account and region; the function acts only on its cluster's instances
(an instance id cannot be known when the rule is made)."""
NOTICE_S = 120
"""EC2 warns two minutes before it reclaims a spot instance: an event or invocation older than that is useless."""


@dataclass
class SpotInterruptionArgs:
    aws: AwsContext
    cluster_name: pulumi.Input[str]
    """The ECS cluster whose tasks to stop."""

    cluster_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    """The stack's KMS key, for the function's log group."""

    log_group_name: str
    """Name of the function's log group."""

    log_retention_days: int


class SpotInterruption(Component[SpotInterruptionArgs]):
    function_name: pulumi.Output[str]
    rule_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: SpotInterruptionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        logs = self._create_log_group("logs", args.log_group_name, args.log_retention_days, args.key_arn)
        role, policy = self._create_role(logs)
        function = self._create_function(role, policy, logs)
        rule = self._create_rule(function)
        self.function_name = function.name
        self.rule_name = rule.name
        self.log_group_name = logs.name
        self.register_outputs(
            {"function_name": self.function_name, "rule_name": self.rule_name, "log_group_name": self.log_group_name}
        )

    def _create_role(self, logs: aws.cloudwatch.LogGroup) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        """ECS actions scoped to the cluster's container instances and tasks, as the Service Authorization
        Reference types them: ListContainerInstances on the cluster, DescribeContainerInstances and ListTasks on
        container instances, StopTask on tasks."""
        args = self._args
        instances = pulumi.Output.concat(args.aws.arn("ecs", "container-instance/"), args.cluster_name, "/*")
        tasks = pulumi.Output.concat(args.aws.arn("ecs", "task/"), args.cluster_name, "/*")
        condition = {"ArnEquals": {"ecs:cluster": args.cluster_arn}}
        policy = document(
            statement("ListClusterInstances", ["ecs:ListContainerInstances"], [args.cluster_arn]),
            statement(
                "DescribeClusterInstances", ["ecs:DescribeContainerInstances", "ecs:ListTasks"], [instances], condition
            ),
            statement("StopClusterTasks", ["ecs:StopTask"], [tasks], condition),
            statement(
                "WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [pulumi.Output.concat(logs.arn, ":*")]
            ),
        )
        role = aws.iam.Role(
            f"{self._name}-function",
            description="deepcloud: stop training tasks on spot interruption",
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            opts=self._child(),
        )
        role_policy = aws.iam.RolePolicy(f"{self._name}-function", role=role.id, policy=policy, opts=self._child())
        return role, role_policy

    def _create_function(
        self, role: aws.iam.Role, policy: aws.iam.RolePolicy, logs: aws.cloudwatch.LogGroup
    ) -> aws.lambda_.Function:
        function = aws.lambda_.Function(
            f"{self._name}-function",
            description="deepcloud: SIGTERM (StopTask) for the training tasks on a spot instance about to be reclaimed",
            role=role.arn,
            runtime=RUNTIME,
            handler=HANDLER,
            # the handler alone: the runtime provides boto3
            code=pulumi.AssetArchive({"handler.py": pulumi.FileAsset(str(FUNCTION_DIR / "handler.py"))}),
            architectures=["arm64"],  # pure Python: the cheaper Graviton price
            timeout=30,  # a few ECS calls; the notice is 120 s
            memory_size=128,
            environment={"variables": {"CLUSTER": self._args.cluster_name}},
            # its own log group, so the stack's retention and key apply (Lambda would make one that never expires)
            logging_config={"log_format": "Text", "log_group": logs.name},
            # no reserved concurrency: an account's first functions may share as little as 10, and reserving any
            # would fail the create there
            opts=self._child(depends_on=[policy]),
        )
        # an invocation that could not run within the notice is of no use any more: no retry after it
        aws.lambda_.FunctionEventInvokeConfig(
            f"{self._name}-function",
            function_name=function.name,
            maximum_event_age_in_seconds=NOTICE_S,
            maximum_retry_attempts=2,
            opts=self._child(),
        )
        return function

    def _create_rule(self, function: aws.lambda_.Function) -> aws.cloudwatch.EventRule:
        rule = aws.cloudwatch.EventRule(
            f"{self._name}-warning",
            description="EC2 spot interruption warnings, two minutes before the reclaim",
            event_pattern=json.dumps(EVENT_PATTERN),
            opts=self._child(),
        )
        permission = aws.lambda_.Permission(
            f"{self._name}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=self._child(),
        )
        aws.cloudwatch.EventTarget(
            f"{self._name}-function",
            rule=rule.name,
            arn=function.arn,
            retry_policy={"maximum_event_age_in_seconds": NOTICE_S, "maximum_retry_attempts": 3},
            opts=self._child(depends_on=[permission]),
        )
        return rule
