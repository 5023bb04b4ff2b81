"""BACKEND=ecs: the trainer as an ECS task on the stack's GPU capacity provider.

The task definition (infra/) names the trainer image; when the image to run is a new tag, ops sets
``deepcloud:trainerImageTag`` and runs ``pulumi up`` so that the task definition Pulumi manages names it
(ECS cannot override a container's image at RunTask). Everything else reaches the container as overrides:

    SM_CHANNEL_<NAME>       s3://<data>/<DATASET>/<name>/ (the trainer downloads it, trainer/sagemaker_env.py)
    SM_HPS                  the hyperparameters as a JSON object of strings, checkpoint_s3_uri among them
    DEEPCLOUD_MODEL_S3_URI  where the trainer uploads model.tar.gz at the end (nothing packs /opt/ml/model on ECS)

Phases: waiting for capacity (PROVISIONING, with the Auto Scaling group's scaling activities), pulling
(PENDING), running (with the CloudWatch log stream), stopping, stopped (exit code and reason). ECS has no
runtime limit of its own, so ops stops the task at the maximum runtime while it watches. A task that infra's
spot-interruption function stopped (its StopTask reason) ends Interrupted: SIGTERM within EC2's two-minute notice, a
checkpoint, and `RESUME=<run-id>` to continue.
"""

from __future__ import annotations

import json
from datetime import datetime

from infra.engine import STACK_TAG
from infra.functions.spot_interruption.handler import REASON_PREFIX as SPOT_INTERRUPTION
from ops.aws import capacity, runs
from ops.aws.console import Phases, say
from ops.aws.context import Context
from ops.aws.images import Image
from ops.aws.logs import StreamTail, last_error
from ops.aws.prices import usd
from ops.aws.stack import CONFIG
from ops.aws.training.base import EXIT_STOPPED, RUN_ID_TAG, Outcome, RunRecord
from ops.errors import OpsError

IDLE_AFTER_RUN_S = 15 * 60
"""How long a GPU instance outlives its last task: ECS managed scaling scales in through the target tracking policy
it creates on the Auto Scaling group, whose low alarm wants 15 one-minute datapoints below the target (the 15-minute
scale-in ECS users report; re:Post "Accelerating Scaling for Amazon ECS Cluster Auto Scaling"). ECS creates and owns
that policy and its alarms ("update the capacity provider managed scaling settings, rather than updating the scaling
policy directly", ECS guide), and no managed scaling setting shortens scale-in, so it is stated, not changed."""
WAITING = ("PROVISIONING",)
STARTING = ("PENDING", "ACTIVATING")
STOPPING = ("DEACTIVATING", "STOPPING", "DEPROVISIONING")


def _task_arn(record: RunRecord) -> str:
    """The run's task, which launch put in the record."""
    if record.task_arn is None:
        raise OpsError(f"run {record.run_id} has no ECS task: it was never launched")
    return record.task_arn


class EcsBackend:
    name = "ecs"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ecs = ctx.aws.client("ecs")
        self.capacity = capacity.describe(ctx.aws, ctx.outputs.capacity_provider_name)
        self.task_definition: dict = {}
        self.container: dict = {}
        self.tail: StreamTail | None = None
        self.activities: set[str] = set()
        self.billing_from: float | None = None
        self.stop_sent = False

    def price(self) -> tuple[str, float, str]:
        kind, hourly = self.capacity.worst_hourly(self.ctx.prices)
        return kind, hourly, f"{', '.join(self.capacity.instance_types)} ({self.capacity.purchase})"

    def prepare(self, image: Image) -> None:
        """The task definition Pulumi manages must name the image; if it does not, set the stack's trainer image
        tag and `pulumi up` (a new revision, owned by Pulumi, so `pulumi destroy` leaves none behind)."""
        family = self.ctx.outputs.task_definition_family
        self._describe_task_definition(image)
        if self.container.get("image") != image.uri:
            say(
                f"task definition {family} runs {self.container.get('image')}: setting "
                f"{CONFIG.trainer_image_tag}={image.tag} and running pulumi up"
            )
            self.ctx.pulumi.set_config(CONFIG.trainer_image_tag, image.tag)
            self.ctx.pulumi.up(on_line=lambda line: say(f"  {line}"))
            self.ctx.stack = self.ctx.stack.reload()
            self._describe_task_definition(image)
            if self.container.get("image") != image.uri:
                raise OpsError(
                    f"after pulumi up, task definition {family} still runs {self.container.get('image')}, "
                    f"not {image.uri}: check that infra/ uses {CONFIG.trainer_image_tag}"
                )

    def _describe_task_definition(self, image: Image) -> None:
        family = self.ctx.outputs.task_definition_family
        reference = self.ctx.outputs.task_definition_arn or family
        self.task_definition = self.ecs.describe_task_definition(taskDefinition=reference)["taskDefinition"]
        containers = self.task_definition.get("containerDefinitions", [])
        mine = [c for c in containers if str(c.get("image", "")).startswith(image.repository_url)]
        if not (mine or containers):
            raise OpsError(f"task definition {family} has no container: run `pulumi up`")
        self.container = (mine or containers)[0]

    def launch(self, record: RunRecord, image: Image, channels: dict[str, str], max_runtime: int) -> None:
        out = self.ctx.outputs
        run_id = record.run_id
        hyperparameters = {**record.hyperparameters, "checkpoint_s3_uri": record.checkpoint_uri}
        environment = {f"SM_CHANNEL_{name.upper()}": uri for name, uri in channels.items()}
        environment.update(
            SM_HPS=json.dumps(hyperparameters, sort_keys=True),
            DEEPCLOUD_MODEL_S3_URI=record.model_uri,
            TRAINING_JOB_NAME=run_id,
            DEEPCLOUD_GIT_REVISION=image.tag.split("-", 1)[0],
            AWS_DEFAULT_REGION=out.region,
        )
        response = self.ecs.run_task(
            cluster=out.cluster_name,
            taskDefinition=self.task_definition["taskDefinitionArn"],
            count=1,
            capacityProviderStrategy=[{"capacityProvider": out.capacity_provider_name, "weight": 1, "base": 0}],
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": list(out.subnet_ids),
                    "securityGroups": [out.security_group_id],
                    "assignPublicIp": "DISABLED",
                }
            },
            overrides={
                "containerOverrides": [
                    {
                        "name": self.container["name"],
                        "command": ["train"],
                        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
                    }
                ]
            },
            startedBy=run_id,
            enableECSManagedTags=True,
            tags=[{"key": STACK_TAG, "value": self.ctx.stack.tag}, {"key": RUN_ID_TAG, "value": run_id}],
        )
        if response.get("failures") or not response.get("tasks"):
            failure = (response.get("failures") or [{}])[0]
            raise OpsError(
                f"ECS did not start the task: {failure.get('reason', 'no task and no reason')}"
                + (f" ({failure['detail']})" if failure.get("detail") else "")
            )
        task = response["tasks"][0]
        record.task_arn = task["taskArn"]
        record.task_definition = self.task_definition["taskDefinitionArn"]
        options = self.container.get("logConfiguration", {}).get("options", {})
        if self.container.get("logConfiguration", {}).get("logDriver") == "awslogs" and "awslogs-group" in options:
            task_id = task["taskArn"].rsplit("/", 1)[-1]
            record.log_group = options["awslogs-group"]
            record.log_stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{self.container['name']}/{task_id}"
            self.tail = StreamTail(self.ctx.aws.client("logs"), record.log_group, record.log_stream)
        say(f"task         {task['taskArn']}")
        if record.log_group is not None:
            say(f"logs         {record.log_group} {record.log_stream}")

    def watch(self, record: RunRecord, max_runtime: int, phases: Phases) -> Outcome:
        hourly = record.usd_per_hour_max
        while True:
            task = self._task(_task_arn(record))
            status = task.get("lastStatus", "")
            if status in WAITING:
                phases.enter(
                    "waiting for capacity",
                    f"capacity provider {self.ctx.outputs.capacity_provider_name}, "
                    f"Auto Scaling group {self.capacity.asg_name}",
                )
                self._scaling_activities(task)
            elif status in STARTING:
                phases.enter("pulling", f"{record.image} on {task.get('containerInstanceArn', '?')}")
            elif status == "RUNNING":
                phases.enter("running", f"log stream {record.log_stream or '(no awslogs)'}")
            elif status in STOPPING:
                phases.enter("stopping", task.get("stoppedReason", ""))
            if status not in WAITING and self.billing_from is None:
                self.billing_from = self.ctx.clock()
            if status == "RUNNING" or status in STOPPING or status == "STOPPED":
                self._print_logs()  # the stream exists once the container has started
            if status == "STOPPED":
                return self._outcome(task)
            if self.billing_from is not None:
                ran = self.ctx.clock() - self.billing_from
                phases.status(f"at most {usd(hourly * ran / 3600)} so far")
                if ran > max_runtime and not self.stop_sent:
                    say(f"maximum runtime reached: stopping {record.task_arn} (the trainer checkpoints first)")
                    self.stop(record, "maximum runtime reached (MAX_COST/MAX_HOURS)")
            self.ctx.wait()

    def _task(self, arn: str) -> dict:
        found = self.ecs.describe_tasks(cluster=self.ctx.outputs.cluster_name, tasks=[arn]).get("tasks", [])
        if not found:
            raise OpsError(f"ECS no longer knows task {arn} (stopped tasks are kept about an hour)")
        return found[0]

    def _scaling_activities(self, task: dict) -> None:
        since = task.get("createdAt")
        page = self.ctx.aws.client("autoscaling").describe_scaling_activities(
            AutoScalingGroupName=self.capacity.asg_name, MaxRecords=20
        )
        for activity in reversed(page.get("Activities", [])):
            started = activity.get("StartTime")
            seen = f"{activity['ActivityId']}:{activity.get('StatusCode')}"  # print each change of an activity
            if seen in self.activities or (
                isinstance(since, datetime) and isinstance(started, datetime) and started < since
            ):
                continue
            self.activities.add(seen)
            message = activity.get("StatusMessage", "")
            say(
                f"  scaling: {activity.get('Description', '')} [{activity.get('StatusCode', '')}]"
                + (f" {message}" if message else "")
            )

    def _print_logs(self) -> None:
        if self.tail is not None:
            for line in self.tail.poll():
                say(f"  | {line}")

    def _outcome(self, task: dict) -> Outcome:
        container = next(
            (c for c in task.get("containers", []) if c.get("name") == self.container.get("name")),
            (task.get("containers") or [{}])[0],
        )
        code = container.get("exitCode")
        lines = self.tail.lines if self.tail else []
        reason = task.get("stoppedReason") or container.get("reason") or task.get("stopCode") or ""
        started, stopped = task.get("pullStartedAt") or task.get("startedAt"), task.get("stoppedAt")
        billed = (
            (stopped - started).total_seconds()
            if isinstance(started, datetime) and isinstance(stopped, datetime)
            else None
        )
        if code == 0:
            return Outcome("Completed", 0, "the trainer finished", billed, lines)
        if reason.startswith(SPOT_INTERRUPTION):  # infra's spot-interruption function stopped it (StopTask reason)
            checkpointed = "after a checkpoint" if code == EXIT_STOPPED else f"exit code {code}"
            return Outcome("Interrupted", code, f"{reason} ({checkpointed})", billed, lines)
        if code == EXIT_STOPPED:
            return Outcome("Stopped", code, f"stopped by SIGTERM after a checkpoint: {reason}", billed, lines)
        if code is None and (self.stop_sent or task.get("stopCode") == "UserInitiated"):
            return Outcome("Stopped", None, f"stopped before the trainer ran: {reason}", billed, lines)
        if code is None:
            return Outcome(
                "Failed", None, f"the container did not run: {container.get('reason') or reason}", billed, lines
            )
        return Outcome("Failed", code, last_error(lines) or container.get("reason") or reason, billed, lines)

    def stop(self, record: RunRecord, reason: str) -> None:
        self.ecs.stop_task(cluster=self.ctx.outputs.cluster_name, task=_task_arn(record), reason=reason[:255])
        self.stop_sent = True

    def idle_note(self, record: RunRecord) -> str | None:
        """The instance the task ran on stays up until managed scaling removes it; at most this much more."""
        if self.billing_from is None:
            return None  # no instance was ever assigned
        idle = record.usd_per_hour_max * IDLE_AFTER_RUN_S / 3600
        return (
            f"the GPU instance stays up about {IDLE_AFTER_RUN_S // 60} min more until ECS managed scaling removes "
            f"it (AWS sets that delay): at most {usd(idle)} ({record.priced_instance_type} on-demand)"
        )

    def collect(self, record: RunRecord, outcome: Outcome) -> None:
        runs.require_model(self.ctx.aws.client("s3"), self.ctx.outputs.artifacts_bucket, record.run_id)
