"""`make status TARGET=aws` (what runs, what it costs per hour from the price table) and `make logs TARGET=aws`.
Everything is moto_server's: Auto Scaling (its instances), ECS, SageMaker, S3 (run records) and CloudWatch Logs."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ops.aws import runs
from tests.ops.conftest import SAGEMAKER_LOGS, client, make_stack, one_line_error, put_host_logs, stubbed


def make_endpoint(stack) -> str:
    sagemaker = client("sagemaker")
    name = f"deepcloud-{stack.name}"
    sagemaker.create_model(
        ModelName=f"{name}-m",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/endpoint",
        PrimaryContainer={
            "Image": f"{stack.serving_repository_url}:abc",
            "ModelDataUrl": f"s3://{stack.artifacts_bucket}/models/r/model.tar.gz",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-c",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-m",
                "InitialInstanceCount": 2,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    stack.standins.update(
        outputs={**stack.outputs, "endpoint_name": name},
        config={"aws:region": "us-east-1", "deepcloud:modelArtifact": "models/r/model.tar.gz"},
    )
    return name


def test_status_lists_what_runs_and_its_hourly_cost(standins, ops_aws) -> None:
    stack = make_stack(standins, desired=1)
    stack.start_task()
    name = make_endpoint(stack)
    s3 = client("s3")
    runs.write_record(
        s3,
        stack.artifacts_bucket,
        {
            "run_id": "train-20260101-000000-aaaa",
            "backend": "ecs",
            "status": "Completed",
            "exit_code": 0,
            "reason": "the trainer finished",
        },
    )
    runs.write_record(
        s3,
        stack.artifacts_bucket,
        {
            "run_id": "train-20260102-000000-bbbb",
            "backend": "sagemaker",
            "status": "Failed",
            "exit_code": None,
            "reason": "AlgorithmError",
        },
    )
    code, out, err = ops_aws("status")
    assert code == 0, err
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in out.splitlines())}
    assert rows["GPU instance"][2:] == ["InService", "1 x g5.xlarge", "$1.01/h"]
    assert rows["ECS task"][1] == "train-1"
    assert rows["ECS task"][3:] == ["on the GPU instances above", "-"]
    assert rows["endpoint"][1:] == [f"{name}/AllTraffic", "InService", "2 x ml.m5.large", "$0.23/h"]
    assert (
        "total        $1.24/h  (us-east-1 on-demand list prices as of 2025-06-01 (ops/aws/prices.toml); "
        "spot costs less)" in out
    )
    assert f"deployed     s3://{stack.artifacts_bucket}/models/r/model.tar.gz" in out
    recent = out.split("recent runs:")[1].splitlines()
    assert recent[2].split()[:4] == ["train-20260102-000000-bbbb", "sagemaker", "Failed", "-"]
    assert recent[3].split()[:4] == ["train-20260101-000000-aaaa", "ecs", "Completed", "0"]


def test_status_of_an_idle_stack_costs_nothing(stack, ops_aws) -> None:
    code, out, err = ops_aws("status")
    assert code == 0, err
    assert "endpoint  -     none deployed" in out
    assert "total        $0.000/h" in out
    assert "runs         none yet (make train TARGET=aws)" in out


def test_logs_of_the_newest_run_and_of_the_endpoint(stack, ops_aws) -> None:
    s3, logs = client("s3"), client("logs")
    stream = "trainer/trainer/abc"
    logs.create_log_stream(logGroupName=stack.log_group, logStreamName=stream)
    now = int(datetime.now(UTC).timestamp() * 1000)
    logs.put_log_events(
        logGroupName=stack.log_group,
        logStreamName=stream,
        logEvents=[
            {"timestamp": now, "message": "epoch 1/30 loss 2.1"},
            {"timestamp": now + 1, "message": "epoch 2/30 loss 1.2"},
        ],
    )
    for run_id in ("train-20260101-000000-aaaa", "train-20260102-000000-bbbb"):
        runs.write_record(
            s3, stack.artifacts_bucket, {"run_id": run_id, "log_group": stack.log_group, "log_stream": stream}
        )
    code, out, err = ops_aws("logs")
    assert code == 0, err
    assert out.splitlines() == [
        f"==> logs (aws): run train-20260102-000000-bbbb, {stack.log_group} {stream}",
        "epoch 1/30 loss 2.1",
        "epoch 2/30 loss 1.2",
    ]
    code, _, err = ops_aws("logs", "--run", "train-nope")
    one_line_error(code, err, "no run train-nope: `make status TARGET=aws` lists the recent runs")
    code, _, err = ops_aws("logs", "--endpoint")
    one_line_error(code, err, "no endpoint is deployed: run `make deploy TARGET=aws` first")


def test_logs_before_any_run(stack, ops_aws) -> None:
    code, _, err = ops_aws("logs")
    one_line_error(code, err, "no training run yet: run `make train TARGET=aws` first")


def test_logs_of_a_job_on_two_instances_show_each_hosts_stream(stack, ops_aws) -> None:
    """SageMaker writes one stream per host, `<job>/algo-<n>-<epoch seconds>` (SageMaker guide, "Log Amazon
    SageMaker AI events with Amazon CloudWatch"); `make logs` shows every host's lines, each labelled."""
    s3, group, run_id = client("s3"), f"{SAGEMAKER_LOGS}-{stack.sfx}", f"train-20260103-000000-{stack.sfx[:4]}"
    put_host_logs(run_id, {1: ["epoch=1 train_loss=1.2"], 2: ["rendezvous with algo-1:29500"]}, group=group)
    runs.write_record(
        s3,
        stack.artifacts_bucket,
        {"run_id": run_id, "log_group": group, "log_stream_prefix": f"{run_id}/", "instance_count": 2},
    )
    code, out, err = ops_aws("logs", "--run", run_id)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"==> logs (aws): run {run_id}, {group} {run_id}/*, 2 hosts"
    assert sorted(lines[1:]) == ["[algo-1] epoch=1 train_loss=1.2", "[algo-2] rendezvous with algo-1:29500"]


def test_status_prices_a_training_job_for_all_its_instances(stack, use_clients, ops_aws) -> None:
    """An in-progress job of 2 x ml.g5.xlarge costs twice the per-instance price; moto's jobs never stay InProgress,
    so SageMaker is botocore's Stubber here (every request checked against the real model)."""
    sagemaker, stub = stubbed("sagemaker")
    job, arn = "train-20260104-000000-cccc", "arn:aws:sagemaker:us-east-1:123456789012:training-job/train-20260104"
    stub.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": job,
                    "TrainingJobArn": arn,
                    "CreationTime": datetime(2026, 1, 4, tzinfo=UTC),
                    "TrainingJobStatus": "InProgress",
                }
            ]
        },
        {"StatusEquals": "InProgress"},
    )
    stub.add_response("list_tags", {"Tags": [{"Key": "deepcloud:stack", "Value": stack.tag}]}, {"ResourceArn": arn})
    stub.add_response(
        "describe_training_job",
        {
            "TrainingJobName": job,
            "TrainingJobArn": arn,
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "CreationTime": datetime(2026, 1, 4, tzinfo=UTC),
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50},
        },
        {"TrainingJobName": job},
    )
    use_clients(sagemaker=sagemaker)
    code, out, err = ops_aws("status")
    assert code == 0, err
    stub.assert_no_pending_responses()
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in out.splitlines())}
    assert rows["training job"][1:] == [job, "Training", "2 x ml.g5.xlarge", "$2.82/h"]
