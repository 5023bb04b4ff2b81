"""`make train TARGET=aws`: a run through every phase, a non-zero exit, MAX_COST capping the runtime, Ctrl-C, and the
SageMaker backend.

S3 (dataset, model, run record), ECR, CloudWatch Logs and SageMaker are moto_server's. ECS and Auto Scaling are
stubbed with botocore's Stubber (every request checked against the service model): moto's RunTask fails for an
awsvpc task definition (its ENI has no private_dns_name in moto 5.2.5), its tasks start RUNNING with no exit code
and never pass through PROVISIONING/PENDING, and its Auto Scaling records no scaling activities.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from ops.aws import dataset, images, runs
from ops.aws.training import run as train
from ops.aws.training.base import TrainOptions
from ops.errors import OpsError
from ops.revision import revision as git_revision
from tests.conftest import REPO
from tests.ops.conftest import client, one_line_error, pulumi_ups, put_host_logs, stubbed

RUN_ID = "train-20260101-120000-abcd"
TASK_ID = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """Fake time: each wait between polls moves it on by ``step`` seconds."""

    def __init__(self, step: float = 60.0) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        self.now += self.step


@pytest.fixture
def ready(stack, monkeypatch):
    """The stack with the dataset in its data bucket and a fixed run id."""
    stack.put_dataset()
    monkeypatch.setattr(runs, "new_run_id", lambda: RUN_ID)
    return stack


def task_arn(stack) -> str:
    return f"arn:aws:ecs:us-east-1:123456789012:task/{stack.cluster_name}/{TASK_ID}"


def image_uri(stack) -> str:
    digest12 = images.content_digest(REPO, images.IMAGES["trainer"], {})[:12]
    return f"{stack.trainer_repository_url}:{git_revision(REPO, short=True)}-{digest12}"


class EcsScript:
    """The ECS and Auto Scaling answers one training run gets, queued on Stubbers in call order."""

    def __init__(self, stack, hyperparameters: dict[str, str]) -> None:
        self.stack, self.hyperparameters = stack, hyperparameters
        self.ecs, self.ecs_stub = stubbed("ecs")
        self.asg, self.asg_stub = stubbed("autoscaling")
        asg_arn = (
            f"arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:uuid:autoScalingGroupName/{stack.asg_name}"
        )
        self.ecs_stub.add_response(
            "describe_capacity_providers",
            {
                "capacityProviders": [
                    {
                        "name": stack.capacity_provider_name,
                        "status": "ACTIVE",
                        "autoScalingGroupProvider": {"autoScalingGroupArn": asg_arn},
                    }
                ]
            },
            {"capacityProviders": [stack.capacity_provider_name]},
        )
        self.asg_stub.add_response(
            "describe_auto_scaling_groups",
            {
                "AutoScalingGroups": [
                    {
                        "AutoScalingGroupName": stack.asg_name,
                        "MinSize": 0,
                        "MaxSize": 2,
                        "DesiredCapacity": 0,
                        "DefaultCooldown": 300,
                        "AvailabilityZones": ["us-east-1a"],
                        "HealthCheckType": "EC2",
                        "CreatedTime": T0,
                        "Instances": [],
                        "MixedInstancesPolicy": {
                            "LaunchTemplate": {
                                "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g4dn.xlarge"}]
                            },
                            "InstancesDistribution": {
                                "OnDemandBaseCapacity": 0,
                                "OnDemandPercentageAboveBaseCapacity": 0,
                            },
                        },
                    }
                ]
            },
            {"AutoScalingGroupNames": [stack.asg_name]},
        )

    @classmethod
    def launched(cls, stack, hyperparameters: dict[str, str]) -> EcsScript:
        """A run whose task definition already names the image: RunTask of revision 1 comes next."""
        script = cls(stack, hyperparameters)
        script.task_definition(image_uri(stack))
        script.run_task(revision=1)
        return script

    def task_definition(self, image: str, revision: int = 1) -> None:
        arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{self.stack.task_definition_family}:{revision}"
        self.ecs_stub.add_response(
            "describe_task_definition",
            {
                "taskDefinition": {
                    "taskDefinitionArn": arn,
                    "family": self.stack.task_definition_family,
                    "revision": revision,
                    "status": "ACTIVE",
                    "containerDefinitions": [
                        {
                            "name": "trainer",
                            "image": image,
                            "logConfiguration": {
                                "logDriver": "awslogs",
                                "options": {"awslogs-group": self.stack.log_group, "awslogs-stream-prefix": "trainer"},
                            },
                        }
                    ],
                }
            },
            {"taskDefinition": arn},
        )  # the exact revision the stack output names

    def run_task(self, revision: int) -> None:
        stack = self.stack
        hps = {**self.hyperparameters, "checkpoint_s3_uri": f"s3://{stack.artifacts_bucket}/checkpoints/{RUN_ID}/"}
        environment = {
            "AWS_DEFAULT_REGION": "us-east-1",
            "DEEPCLOUD_GIT_REVISION": git_revision(REPO, short=True),
            "DEEPCLOUD_MODEL_S3_URI": f"s3://{stack.artifacts_bucket}/models/{RUN_ID}/model.tar.gz",
            "SM_CHANNEL_TEST": f"s3://{stack.data_bucket}/digits/test/",
            "SM_CHANNEL_TRAIN": f"s3://{stack.data_bucket}/digits/train/",
            "SM_CHANNEL_VALIDATION": f"s3://{stack.data_bucket}/digits/validation/",
            "SM_HPS": json.dumps(hps, sort_keys=True),
            "TRAINING_JOB_NAME": RUN_ID,
        }
        expected = {
            "cluster": stack.cluster_name,
            "count": 1,
            "taskDefinition": f"arn:aws:ecs:us-east-1:123456789012:task-definition/"
            f"{stack.task_definition_family}:{revision}",
            "capacityProviderStrategy": [{"capacityProvider": stack.capacity_provider_name, "weight": 1, "base": 0}],
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": stack.subnet_ids,
                    "securityGroups": [stack.security_group_id],
                    "assignPublicIp": "DISABLED",
                }
            },
            "overrides": {
                "containerOverrides": [
                    {
                        "name": "trainer",
                        "command": ["train"],
                        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
                    }
                ]
            },
            "startedBy": RUN_ID,
            "enableECSManagedTags": True,
            "tags": [{"key": "deepcloud:stack", "value": stack.tag}, {"key": "deepcloud:run-id", "value": RUN_ID}],
        }
        self.ecs_stub.add_response("run_task", {"tasks": [self._task("PROVISIONING")], "failures": []}, expected)

    def _task(self, status: str, exit_code: int | None = None, **extra) -> dict:
        container = {"name": "trainer", "lastStatus": status}
        if exit_code is not None:
            container["exitCode"] = exit_code
        task = {
            "taskArn": task_arn(self.stack),
            "lastStatus": status,
            "desiredStatus": "RUNNING",
            "createdAt": T0,
            "containers": [container],
        }
        if status not in ("PROVISIONING",):
            task["containerInstanceArn"] = "arn:aws:ecs:us-east-1:123456789012:container-instance/c/ci-1"
        if status in ("PENDING", "RUNNING", "STOPPED"):
            task["pullStartedAt"] = T0 + timedelta(minutes=3)
        task.update(extra)
        return task

    def poll(self, status: str, exit_code: int | None = None, **extra) -> None:
        self.ecs_stub.add_response(
            "describe_tasks",
            {"tasks": [self._task(status, exit_code, **extra)]},
            {"cluster": self.stack.cluster_name, "tasks": [task_arn(self.stack)]},
        )

    def activities(self, *activities: tuple[str, str, str]) -> None:
        listed = [
            {
                "ActivityId": f"a-{i}",
                "AutoScalingGroupName": self.stack.asg_name,
                "Cause": "ECS managed scaling",
                "StartTime": T0 + timedelta(seconds=30 + i),
                "StatusCode": code,
                "Description": text,
                **({"StatusMessage": message} if message else {}),
            }
            for i, (text, code, message) in enumerate(activities)
        ]
        self.asg_stub.add_response(
            "describe_scaling_activities",
            {"Activities": listed[::-1]},
            {"AutoScalingGroupName": self.stack.asg_name, "MaxRecords": 20},
        )

    def stopped(self, exit_code: int | None, reason: str, stop_code: str = "EssentialContainerExited") -> None:
        self.poll("STOPPED", exit_code, stoppedReason=reason, stopCode=stop_code, stoppedAt=T0 + timedelta(minutes=33))

    def stop_task(self, reason: str) -> None:
        self.ecs_stub.add_response(
            "stop_task",
            {"task": self._task("STOPPING")},
            {"cluster": self.stack.cluster_name, "task": task_arn(self.stack), "reason": reason},
        )

    def clients(self) -> dict:
        return {"ecs": self.ecs, "autoscaling": self.asg}

    def done(self) -> None:
        self.ecs_stub.assert_no_pending_responses()
        self.asg_stub.assert_no_pending_responses()


def put_log(stack, lines: list[str]) -> None:
    logs = client("logs")
    stream = f"trainer/trainer/{TASK_ID}"
    logs.create_log_stream(logGroupName=stack.log_group, logStreamName=stream)
    start = int(datetime.now(UTC).timestamp() * 1000)  # CloudWatch (and moto) refuse events over 14 days old
    logs.put_log_events(
        logGroupName=stack.log_group,
        logStreamName=stream,
        logEvents=[{"timestamp": start + i, "message": line} for i, line in enumerate(lines)],
    )


def record(stack) -> dict:
    return json.loads(
        client("s3").get_object(Bucket=stack.artifacts_bucket, Key=f"models/{RUN_ID}/run.json")["Body"].read()
    )


def test_ecs_run_through_every_phase(ready, tmp_path, capsys) -> None:
    stack = ready
    script = EcsScript(stack, {"epochs": "2"})
    script.task_definition(f"{stack.trainer_repository_url}:0.1.0")
    script.task_definition(image_uri(stack), revision=2)  # after `pulumi up`, which registers revision 2
    revision2 = stack.task_definition_arn.rsplit(":", 1)[0] + ":2"
    stack.standins.update(hooks={"up": f"state['outputs']['task_definition_arn'] = {revision2!r}"})
    script.run_task(revision=2)
    script.poll("PROVISIONING")
    script.activities(("Launching a new EC2 instance: i-0abc", "InProgress", ""))
    script.poll("PROVISIONING")
    script.activities(("Launching a new EC2 instance: i-0abc", "Successful", ""))
    script.poll("PENDING")
    script.poll("RUNNING")
    script.poll("RUNNING")
    script.stopped(0, "Essential container in task exited")
    put_log(
        stack,
        [
            'config {"epochs": 2}',
            "epoch 2/2 validation_accuracy=0.97",
            f"model uploaded to s3://{stack.artifacts_bucket}/models/{RUN_ID}/model.tar.gz",
        ],
    )
    stack.put_model(RUN_ID)
    clock = Clock()
    ctx = stack.context(tmp_path, script.clients(), clock=clock, sleep=clock.sleep)

    result = train.run(ctx, TrainOptions(hyperparameters={"epochs": "2"}))

    out = capsys.readouterr().out
    script.done()
    assert result["status"] == "Completed"
    expected_in_order = [
        f"==> train (aws, ecs): run {RUN_ID}, stack {stack.name}",
        "capacity     g5.xlarge, g4dn.xlarge (spot): at most $1.01/h (g5.xlarge on-demand)",
        "max runtime  24 h 00 min (MAX_HOURS=24); worst case $24.14",
        "prices       us-east-1 on-demand list prices as of 2025-06-01 (ops/aws/prices.toml)",
        f"pushed {image_uri(stack)}",
        f"task definition {stack.task_definition_family} runs {stack.trainer_repository_url}:0.1.0: setting "
        f"deepcloud:trainerImageTag={image_uri(stack).rsplit(':', 1)[1]} and running pulumi up",
        f"task         {task_arn(stack)}",
        "[0:00:00] waiting for capacity: capacity provider",
        "  scaling: Launching a new EC2 instance: i-0abc [InProgress]",
        "  scaling: Launching a new EC2 instance: i-0abc [Successful]",
        "[0:02:00] pulling: " + image_uri(stack),
        "[0:03:00] running: log stream trainer/trainer/" + TASK_ID,
        "  | epoch 2/2 validation_accuracy=0.97",
        "stopped      Completed, exit code 0: the trainer finished; 30 min 00 s billed, at most $0.50",
        "afterwards   the GPU instance stays up about 15 min more until ECS managed scaling removes it (AWS sets that "
        "delay): at most $0.25 (g5.xlarge on-demand)",
        f"run record   s3://{stack.artifacts_bucket}/models/{RUN_ID}/run.json",
        f"model        s3://{stack.artifacts_bucket}/models/{RUN_ID}/model.tar.gz",
    ]
    position = 0
    for expected in expected_in_order:
        assert expected in out[position:], f"{expected!r} not in order in:\n{out}"
        position = out.index(expected, position)
    assert [
        "config",
        "set",
        "deepcloud:trainerImageTag",
        image_uri(stack).rsplit(":", 1)[1],
        "--non-interactive",
    ] in stack.standins.calls("pulumi")
    assert len(pulumi_ups(stack)) == 1, "the task definition's new image, through the policy pack"
    saved = record(stack)
    assert saved["status"] == "Completed"
    assert saved["exit_code"] == 0
    assert saved["task_arn"] == task_arn(stack)
    assert saved["log_stream"] == f"trainer/trainer/{TASK_ID}"
    assert saved["hyperparameters"] == {"epochs": "2"}
    assert saved["image"] == image_uri(stack)
    assert saved["max_runtime_s"] == 24 * 3600
    assert saved["billed_s"] == 1800


def test_non_zero_exit_fails_with_the_trainers_reason(ready, tmp_path, capsys) -> None:
    stack = ready
    script = EcsScript.launched(stack, {"lr": "fast"})
    script.poll("RUNNING")
    script.stopped(1, "Essential container in task exited")
    put_log(stack, ["error: hyperparameter 'lr' must be a finite number, got 'fast'"])
    clock = Clock()
    ctx = stack.context(tmp_path, script.clients(), clock=clock, sleep=clock.sleep)

    with pytest.raises(OpsError) as failed:
        train.run(ctx, TrainOptions(hyperparameters={"lr": "fast"}))

    assert (
        str(failed.value) == f"run {RUN_ID} failed (exit code 1): hyperparameter 'lr' must be a finite number, "
        "got 'fast'"
    )
    script.done()
    out = capsys.readouterr().out
    assert "  | error: hyperparameter 'lr' must be a finite number, got 'fast'" in out
    assert "stopped      Failed, exit code 1" in out
    assert not [c for c in stack.standins.calls("pulumi") if c[0] == "up"], "the task definition already had it"
    saved = record(stack)
    assert (saved["status"], saved["exit_code"]) == ("Failed", 1)


def test_a_container_that_never_ran(ready, tmp_path) -> None:
    stack = ready
    script = EcsScript.launched(stack, {})
    script.poll("PENDING")
    script.stopped(
        None, "CannotPullContainerError: pull image manifest has been retried 5 time(s)", stop_code="TaskFailedToStart"
    )
    clock = Clock()
    ctx = stack.context(tmp_path, script.clients(), clock=clock, sleep=clock.sleep)
    with pytest.raises(
        OpsError,
        match=r"failed \(exit code none\): the container did not run: "
        r"CannotPullContainerError",
    ):
        train.run(ctx, TrainOptions(hyperparameters={}))


def test_max_cost_caps_the_runtime_and_stops_the_task(ready, tmp_path, capsys) -> None:
    stack = ready
    script = EcsScript.launched(stack, {})
    script.poll("PROVISIONING")
    script.activities()
    script.poll("PENDING")  # t=600: an instance is assigned; the runtime counts from here
    script.poll("RUNNING")  # t=1200: ran 600 s
    script.poll("RUNNING")  # t=1800: ran 1200 s
    script.poll("RUNNING")  # t=2400: ran 1800 s > 1789 s -> stop
    script.stop_task("maximum runtime reached (MAX_COST/MAX_HOURS)")
    script.stopped(143, "maximum runtime reached (MAX_COST/MAX_HOURS)", stop_code="UserInitiated")
    clock = Clock(step=600)
    ctx = stack.context(tmp_path, script.clients(), clock=clock, sleep=clock.sleep)

    with pytest.raises(OpsError) as stopped:
        train.run(ctx, TrainOptions(hyperparameters={}, max_cost=0.5))

    out = capsys.readouterr().out
    # $0.50 at g5.xlarge's $1.006/h buys 1789 s.
    assert "max runtime  29 min 49 s (MAX_COST=0.5); worst case $0.50" in out
    assert f"maximum runtime reached: stopping {task_arn(stack)}" in out
    assert str(stopped.value).startswith(f"run {RUN_ID} was stopped (stopped by SIGTERM after a checkpoint")
    assert f"`make train TARGET=aws RESUME={RUN_ID}` continues it" in str(stopped.value)
    script.done()
    saved = record(stack)
    assert (saved["status"], saved["exit_code"], saved["max_runtime_s"]) == ("Stopped", 143, 1789)


def test_a_spot_interruption_ends_the_run_interrupted_and_resumable(ready, tmp_path) -> None:
    """infra's spot-interruption function stops the task with its own reason (tests/infra/test_spot_interruption.py);
    DescribeTasks reports it as stoppedReason."""
    from infra.functions.spot_interruption.handler import stop_reason

    stack = ready
    script = EcsScript.launched(stack, {})
    script.poll("RUNNING")
    script.stopped(143, stop_reason("i-0abc"), stop_code="UserInitiated")
    clock = Clock()
    ctx = stack.context(tmp_path, script.clients(), clock=clock, sleep=clock.sleep)

    with pytest.raises(OpsError) as interrupted:
        train.run(ctx, TrainOptions(hyperparameters={}))

    message = str(interrupted.value)
    assert message.startswith(
        f"run {RUN_ID} was interrupted: EC2 reclaimed its spot instance (EC2 spot interruption of i-0abc"
    )
    assert f"`make train TARGET=aws RESUME={RUN_ID}` continues it" in message
    assert f"checkpoints are in s3://{stack.artifacts_bucket}/checkpoints/{RUN_ID}/" in message
    script.done()
    saved = record(stack)
    assert (saved["status"], saved["exit_code"]) == ("Interrupted", 143)


def test_ctrl_c_asks_and_stops_the_task(ready, tmp_path, capsys) -> None:
    stack = ready
    script = EcsScript.launched(stack, {})
    script.poll("PROVISIONING")
    script.activities()
    script.stop_task("stopped from make train (Ctrl-C)")
    script.stopped(None, "stopped from make train (Ctrl-C)", stop_code="UserInitiated")
    presses = []

    def sleep(_seconds: float) -> None:
        if not presses:
            presses.append(1)
            raise KeyboardInterrupt

    ctx = stack.context(tmp_path, script.clients(), sleep=sleep)
    with pytest.raises(OpsError, match=r"was stopped \(stopped before the trainer ran"):
        train.run(ctx, TrainOptions(hyperparameters={}))
    out = capsys.readouterr().out
    assert f"stop {task_arn(stack)}? (the trainer checkpoints first) [Y/n] (no terminal: yes)" in out
    script.done()


def test_ctrl_c_and_no_leaves_it_running(ready, tmp_path, monkeypatch) -> None:
    stack = ready
    script = EcsScript.launched(stack, {})
    script.poll("PROVISIONING")
    script.activities()
    monkeypatch.setattr(train, "ask", lambda question, default: False)

    def sleep(_seconds: float) -> None:
        raise KeyboardInterrupt

    ctx = stack.context(tmp_path, script.clients(), sleep=sleep)
    with pytest.raises(OpsError, match=rf"^left {task_arn(stack)} running: `make logs TARGET=aws RUN={RUN_ID}`"):
        train.run(ctx, TrainOptions(hyperparameters={}))
    script.done()


def test_no_dataset_in_the_bucket(stack, tmp_path) -> None:
    with pytest.raises(
        OpsError,
        match=rf"^no dataset in s3://{stack.data_bucket}/digits/: run `make data "
        r"TARGET=aws` first",
    ):
        train.run(stack.context(tmp_path), TrainOptions(hyperparameters={}, backend="sagemaker"))


LOCAL_STORAGE_NAMED_BY_AWS = ("ml.p4d.", "ml.g4dn.", "ml.g5.")
"""The ML families the SageMaker guide ("Managing storage paths for different types of instance local storage") and
botocore's ResourceConfig.VolumeSizeInGB text name as having NVMe instance storage."""


def refuse_volume_key_on_local_storage(sagemaker) -> None:
    """Answer CreateTrainingJob as SageMaker does and moto does not: botocore's model of ResourceConfig.VolumeKmsKeyId
    says "You can't request a VolumeKmsKeyId when using an instance type with local storage"."""

    def check(params, **_kwargs) -> None:
        resources = params.get("ResourceConfig", {})
        if resources.get("VolumeKmsKeyId") and resources.get("InstanceType", "").startswith(LOCAL_STORAGE_NAMED_BY_AWS):
            raise ClientError(
                {
                    "Error": {
                        "Code": "ValidationException",
                        "Message": "You can't request a VolumeKmsKeyId when using an instance type with local storage.",
                    }
                },
                "CreateTrainingJob",
            )

    sagemaker.meta.events.register("before-parameter-build.sagemaker.CreateTrainingJob", check)


def test_sagemaker_job_with_spot_checkpoints_kms_isolation_and_vpc(ready, tmp_path, capsys) -> None:
    stack = ready
    stack.put_model(RUN_ID, key=f"models/{RUN_ID}/output/model.tar.gz")  # what SageMaker uploads at the end
    ctx = stack.context(tmp_path)
    refuse_volume_key_on_local_storage(ctx.aws.client("sagemaker"))

    result = train.run(ctx, TrainOptions(hyperparameters={"epochs": "3"}, backend="sagemaker", max_cost=2.0))

    job = client("sagemaker").describe_training_job(TrainingJobName=RUN_ID)
    assert job["AlgorithmSpecification"]["TrainingImage"] == image_uri(stack)
    assert job["HyperParameters"] == {"epochs": "3"}
    assert job["RoleArn"] == stack.training_role_arn
    assert job["EnableManagedSpotTraining"] is True
    limits = job["StoppingCondition"]
    assert limits["MaxRuntimeInSeconds"] == 5113, "$2.00 at ml.g5.xlarge's $1.408/h"
    assert limits["MaxWaitTimeInSeconds"] > limits["MaxRuntimeInSeconds"]
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{stack.artifacts_bucket}/checkpoints/{RUN_ID}/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["OutputDataConfig"]["KmsKeyId"] == stack.kms_key_arn
    assert "VolumeKmsKeyId" not in job["ResourceConfig"], "ml.g5 has NVMe storage: SageMaker refuses a volume key"
    assert job["EnableNetworkIsolation"] is True
    assert job["VpcConfig"] == {"SecurityGroupIds": [stack.security_group_id], "Subnets": stack.subnet_ids}
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["train", "validation", "test"]
    tags = client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert {"Key": "deepcloud:stack", "Value": stack.tag} in tags
    assert result["status"] == "Completed"
    copied = client("s3").head_object(Bucket=stack.artifacts_bucket, Key=f"models/{RUN_ID}/model.tar.gz")
    assert copied["ContentLength"] > 0
    out = capsys.readouterr().out
    assert "capacity     ml.g5.xlarge (SageMaker managed spot): at most $1.41/h (ml.g5.xlarge on-demand)" in out
    assert "[0:00:00] waiting for capacity: Preparing the instances for training" in out


def test_sagemaker_job_on_an_ebs_instance_type_encrypts_its_volume_with_the_stack_key(ready, tmp_path) -> None:
    stack = ready
    stack.put_model(RUN_ID, key=f"models/{RUN_ID}/output/model.tar.gz")
    ctx = stack.context(tmp_path)
    refuse_volume_key_on_local_storage(ctx.aws.client("sagemaker"))
    train.run(ctx, TrainOptions(hyperparameters={}, backend="sagemaker", instance_type="ml.p3.2xlarge"))
    job = client("sagemaker").describe_training_job(TrainingJobName=RUN_ID)
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == stack.kms_key_arn


def test_sagemaker_backend_needs_the_training_role_output(ready, tmp_path) -> None:
    outputs = dict(ready.outputs)
    del outputs["training_role_arn"]
    ready.standins.update(outputs=outputs)
    with pytest.raises(OpsError, match=r"has no output training_role_arn .*: BACKEND=sagemaker needs it"):
        train.run(ready.context(tmp_path), TrainOptions(hyperparameters={}, backend="sagemaker"))


def test_unpriced_capacity_cannot_honour_max_cost(ready, tmp_path) -> None:
    with pytest.raises(OpsError, match=r"^no price for ml.x9.huge in \[sagemaker_training\] of ops/aws/prices.toml"):
        train.run(
            ready.context(tmp_path), TrainOptions(hyperparameters={}, backend="sagemaker", instance_type="ml.x9.huge")
        )


def test_stubber_rejects_a_request_the_real_api_would(stack) -> None:
    """The Stubber is only as good as its validation: a misspelt parameter fails like the real API would."""
    ecs, stub = stubbed("ecs")
    stub.add_response("stop_task", {})
    with pytest.raises(Exception, match="Unknown parameter in input"):
        ecs.stop_task(cluster="c", task="t", reasn="typo")
    assert isinstance(stub, Stubber)


def _small_channels(dataset, dest):  # stands in for writing the images: the upload is what is tested here
    for channel in ("train", "validation", "test"):
        (dest / channel).mkdir(parents=True, exist_ok=True)
        (dest / channel / "manifest.csv").write_text(f"file,label\nimages/0.png,{dataset.name}\n")
        (dest / channel / "classes.txt").write_text("0\n")


def test_make_data_copies_the_channels_once(stack, ops_aws, monkeypatch) -> None:
    monkeypatch.setattr("ops.data.prepare", _small_channels)
    code, out, err = ops_aws("data")
    assert code == 0, err
    assert f"s3://{stack.data_bucket}/digits/: 6 files sent, 0 already there" in out
    code, out, _ = ops_aws("data")
    assert f"s3://{stack.data_bucket}/digits/: 0 files sent, 6 already there" in out
    keys = sorted(o["Key"] for o in client("s3").list_objects_v2(Bucket=stack.data_bucket)["Contents"])
    assert keys[:2] == ["digits/test/classes.txt", "digits/test/manifest.csv"]


def test_mnist_goes_to_a_prefix_of_its_own_and_trains_with_its_defaults(stack, ops_aws, monkeypatch) -> None:
    """DATASET=mnist: its own folder in the bucket beside the digits, and the job reads that folder's channels with
    the dataset's default hyperparameters (HP= still wins), as the local target does."""
    monkeypatch.setattr("ops.data.prepare", _small_channels)
    assert ops_aws("data")[0] == 0
    monkeypatch.setenv("DATASET", "mnist")
    code, out, err = ops_aws("data")
    assert code == 0, err
    assert "data (aws): mnist -> " in out
    assert f"s3://{stack.data_bucket}/mnist/: 6 files sent" in out
    s3 = client("s3")
    for name in ("mnist", "digits"):  # both folders, each with its own dataset's files
        body = s3.get_object(Bucket=stack.data_bucket, Key=f"{name}/train/manifest.csv")["Body"].read()
        assert body.endswith(f",{name}\n".encode())
    assert dataset.channels(s3, stack.data_bucket, "mnist") == {
        c: f"s3://{stack.data_bucket}/mnist/{c}/" for c in ("train", "validation", "test")
    }
    seen: list = []
    monkeypatch.setattr("ops.aws.training.run.run", lambda ctx, options: seen.append(options) or {})
    monkeypatch.setattr("ops.aws.preflight.run", lambda *a, **k: None)
    assert ops_aws("train", "--hp", "epochs=3")[0] == 0
    assert seen[0].dataset == "mnist"
    assert seen[0].hyperparameters == {"model": "convnet", "epochs": "3", "dropout": "0.5"}


def test_a_dataset_not_uploaded_names_the_make_data_that_uploads_it(stack, tmp_path) -> None:
    with pytest.raises(
        OpsError,
        match=rf"^no dataset in s3://{stack.data_bucket}/mnist/: run `make data "
        r"TARGET=aws DATASET=mnist` first",
    ):
        train.run(stack.context(tmp_path), TrainOptions(hyperparameters={}, dataset="mnist", backend="sagemaker"))


def describe_answer(stack, status: str, secondary: str, transitions: list[dict], **extra) -> dict:
    """A DescribeTrainingJob answer with the members botocore's model requires, and what the watcher reads."""
    return {
        "TrainingJobName": RUN_ID,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{RUN_ID}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{stack.artifacts_bucket}/models/{RUN_ID}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "CreationTime": T0,
        "StoppingCondition": {"MaxRuntimeInSeconds": 2556},
        "SecondaryStatusTransitions": transitions,
        **extra,
    }


def test_sagemaker_job_on_two_instances_prices_both_and_shows_each_hosts_log(ready, tmp_path, capsys) -> None:
    """The request for N instances, checked by botocore's Stubber against the real CreateTrainingJob model."""
    stack = ready
    stack.put_model(RUN_ID, key=f"models/{RUN_ID}/output/model.tar.gz")
    put_host_logs(
        RUN_ID,
        {
            1: ["epoch=1 train_loss=1.2 train_accuracy=0.8 validation_loss=1 validation_accuracy=0.78"],
            2: ["waiting for algo-1 to resolve"],
        },
    )
    sagemaker, stub = stubbed("sagemaker")
    requests: list[dict] = []
    sagemaker.meta.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: requests.append(params)
    )
    channel = {
        c: {
            "ChannelName": c,
            "InputMode": "File",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{stack.data_bucket}/digits/{c}/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
        for c in ("train", "validation", "test")
    }
    expected = {
        "TrainingJobName": RUN_ID,
        "AlgorithmSpecification": ANY,
        "RoleArn": stack.training_role_arn,
        "HyperParameters": {"epochs": "2"},
        "InputDataConfig": list(channel.values()),
        "OutputDataConfig": ANY,
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 2556, "MaxWaitTimeInSeconds": 2556 + 3600},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": ANY,
        "TensorBoardOutputConfig": {
            "LocalPath": "/opt/ml/output/tensorboard",
            "S3OutputPath": f"s3://{stack.artifacts_bucket}/models/{RUN_ID}/tensorboard/",
        },
        "VpcConfig": {"SecurityGroupIds": [stack.security_group_id], "Subnets": stack.subnet_ids},
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
        "Environment": ANY,
        "Tags": ANY,
    }
    stub.add_response(
        "create_training_job",
        {"TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{RUN_ID}"},
        expected,
    )
    starting = {"Status": "Starting", "StartTime": T0, "StatusMessage": "Preparing the instances for training"}
    stub.add_response(
        "describe_training_job",
        describe_answer(stack, "InProgress", "Starting", [starting]),
        {"TrainingJobName": RUN_ID},
    )
    stub.add_response(
        "describe_training_job",
        describe_answer(
            stack,
            "Completed",
            "Completed",
            [starting, {"Status": "Completed", "StartTime": T0}],
            BillableTimeInSeconds=600,
        ),
        {"TrainingJobName": RUN_ID},
    )
    clock = Clock()
    ctx = stack.context(tmp_path, {"sagemaker": sagemaker}, clock=clock, sleep=clock.sleep)

    result = train.run(
        ctx, TrainOptions(hyperparameters={"epochs": "2"}, backend="sagemaker", max_cost=2.0, instance_count=2)
    )

    stub.assert_no_pending_responses()
    (request,) = requests
    names = [d["Name"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]]
    assert names == [
        "train:batch_loss",
        "train:learning_rate",
        "train:loss",
        "train:accuracy",
        "validation:loss",
        "validation:accuracy",
        "test:loss",
        "test:accuracy",
    ]
    out = capsys.readouterr().out
    assert (
        "capacity     2 x ml.g5.xlarge (SageMaker managed spot): at most $2.82/h (2 x $1.41/h, ml.g5.xlarge on-demand)"
    ) in out
    assert "max runtime  42 min 36 s (MAX_COST=2); worst case $2.00" in out, "$2.00 buys 2556 s of 2 x $1.408/h"
    assert f"job          {RUN_ID} (2 x ml.g5.xlarge)" in out
    assert f"tensorboard  s3://{stack.artifacts_bucket}/models/{RUN_ID}/tensorboard/" in out
    assert "  | [algo-1] epoch=1 train_loss=1.2" in out
    assert "  | [algo-2] waiting for algo-1 to resolve" in out
    # BillableTimeInSeconds is wall-clock; the bill is that times InstanceCount (botocore DescribeTrainingJob).
    assert "10 min 00 s billed, at most $0.47" in out
    assert result["status"] == "Completed"
    assert (record(stack)["instance_count"], record(stack)["cost_usd_max"]) == (2, 0.4693)


@pytest.mark.parametrize(
    ("count", "backend", "message"),
    [
        ("0", "sagemaker", "INSTANCE_COUNT='0' is not a positive whole number: write e.g. INSTANCE_COUNT=2"),
        ("two", "sagemaker", "INSTANCE_COUNT='two' is not a positive whole number"),
        ("1.5", "sagemaker", "INSTANCE_COUNT='1.5' is not a positive whole number"),
        (
            "2",
            "ecs",
            "INSTANCE_COUNT=2 needs BACKEND=sagemaker: BACKEND=ecs runs one instance per run; use `make train "
            "TARGET=aws BACKEND=sagemaker INSTANCE_COUNT=2`",
        ),
    ],
)
def test_instance_count_is_checked_before_anything_runs(stack, ops_aws, monkeypatch, count, backend, message) -> None:
    monkeypatch.setenv("INSTANCE_COUNT", count)
    for command in ("train", "preflight"):
        code, _, err = ops_aws(command, "--backend", backend)
        one_line_error(code, err, message)
    assert not stack.standins.calls("pulumi"), "refused before the stack was even read"
