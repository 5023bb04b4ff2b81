"""`make destroy TARGET=aws`: stop what runs, `pulumi destroy`, then audit by the stack tag, with and without
leftovers.

ECS, S3, KMS, CloudWatch Logs and the Resource Groups Tagging API are moto_server's. The running task is a real
moto task on a registered container instance (moto's RunTask needs one); its task definition uses bridge
networking because moto 5.2.5's RunTask fails for awsvpc. `pulumi destroy` is the stand-in, whose hook deletes in
moto what the infra program's destroy would. The SageMaker job in progress is stubbed with botocore's Stubber:
moto's training jobs are Completed as soon as they are created.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.ops.conftest import REGION, client, one_line_error, stubbed

HOOK_DESTROY = """
session = boto3.session.Session()
out = state["outputs"]
keep = state.get("keep", [])
s3 = session.client("s3")
for role in ("artifacts", "access_logs"):  # emptied first, as force_destroy does (the stand-in runs only then)
    if role not in keep:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=out[role + "_bucket"]):
            for v in page.get("Versions", []):
                s3.delete_object(Bucket=out[role + "_bucket"], Key=v["Key"], VersionId=v["VersionId"])
        s3.delete_bucket(Bucket=out[role + "_bucket"])
ecr = session.client("ecr")
for url in (out["trainer_repository_url"], out["serving_repository_url"]):
    ecr.delete_repository(repositoryName=url.split("/", 1)[1], force=True)
ecs = session.client("ecs")
for arn in ecs.list_task_definitions(familyPrefix=out["task_definition_family"])["taskDefinitionArns"]:
    ecs.deregister_task_definition(taskDefinition=arn)
ecs.delete_cluster(cluster=out["cluster_name"])
if "log-group" not in keep:
    session.client("logs").delete_log_group(logGroupName=state["log_group"])
if "key" not in keep:
    session.client("kms").schedule_key_deletion(KeyId=out["kms_key_arn"].rsplit("/", 1)[1], PendingWindowInDays=7)
if out.get("endpoint_name"):  # the endpoint goes; its models and configurations are retained on delete (infra/)
    session.client("sagemaker").delete_endpoint(EndpointName=out["endpoint_name"])
state["outputs"] = {}
"""


def prepare(stack, keep: tuple[str, ...] = (), remaining: tuple[str, ...] = ()) -> None:
    """`pulumi destroy` deletes all but ``keep``; the stack's state keeps ``remaining`` (as --exclude-protected
    keeps the protected data bucket and what it needs)."""
    state = stack.standins.read()
    state.update(
        hooks={"destroy": HOOK_DESTROY},
        keep=list(keep),
        log_group=stack.log_group,
        remaining=[f"arn:aws:s3:::{stack.data_bucket}", *remaining],
    )
    stack.standins.write(state)


def test_destroy_stops_the_task_and_leaves_only_the_retained_bucket(stack, ops_aws) -> None:
    task = stack.start_task()
    prepare(stack, keep=("key",), remaining=(stack.kms_key_arn,))
    code, out, err = ops_aws("destroy")
    assert code == 0, out + err
    assert f"stopping ECS task {task}" in out
    assert "stopped      1 running task(s)/job(s)" in out
    assert ["destroy", "--yes", "--skip-preview", "--exclude-protected", "--non-interactive"] in stack.standins.calls(
        "pulumi"
    )
    described = client("ecs").describe_tasks(cluster=stack.cluster_name, tasks=[task])["tasks"][0]
    assert described["lastStatus"] == "STOPPED"
    retained = out.split("retained by design:")[1].split("gone or not billed:")[0]
    assert f"arn:aws:s3:::{stack.data_bucket}" in retained
    assert "deepcloud:protectDataBucket=false" in retained
    assert stack.kms_key_arn in retained, "the data bucket's key stays with it"
    assert "kept by `pulumi destroy --exclude-protected`" in retained
    gone = out.split("gone or not billed:")[1]
    assert task in gone
    assert "stopped task (not billed)" in gone
    assert "left over" not in out
    assert out.rstrip().endswith("nothing billable is left")


def test_destroy_with_leftovers_exits_non_zero_and_lists_them(stack, ops_aws) -> None:
    prepare(stack, keep=("artifacts", "log-group"))
    code, out, err = ops_aws("destroy")
    one_line_error(
        code,
        err,
        f"2 resource(s) tagged deepcloud:stack={stack.tag} are left (table above): run "
        "`make destroy TARGET=aws` again in a few minutes",
    )
    leftover = out.split("left over (billable or still part of the stack):")[1].split("retained by design:")[0]
    rows = [line.split() for line in leftover.strip().splitlines()]
    assert rows[0] == ["kind", "resource", "note"]
    assert [r[:2] for r in rows[1:]] == [
        ["logs:log-group", f"arn:aws:logs:{REGION}:123456789012:log-group:{stack.log_group}"],
        ["s3:bucket", f"arn:aws:s3:::{stack.artifacts_bucket}"],
    ]
    assert "nothing billable is left" not in out
    gone = out.split("gone or not billed:")[1]
    assert stack.kms_key_arn in gone
    assert "pending deletion on" in gone


def test_a_failed_pulumi_destroy_still_audits(stack, ops_aws) -> None:
    stack.standins.update(fail={"destroy": "error: deleting ECS Cluster: ClusterContainsTasksException"})
    code, out, err = ops_aws("destroy")
    one_line_error(code, err, "pulumi destroy failed (pulumi: deleting ECS Cluster: ClusterContainsTasksException)")
    assert "left over (billable or still part of the stack):" in out
    assert f"arn:aws:ecs:{REGION}:123456789012:cluster/{stack.cluster_name}" in out


def test_destroy_stops_the_stacks_sagemaker_job_only(stack, ops_aws, use_clients) -> None:
    prepare(stack)
    sagemaker, stub = stubbed("sagemaker")
    jobs = [
        {
            "TrainingJobName": name,
            "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
            "CreationTime": datetime.now(UTC),
            "TrainingJobStatus": "InProgress",
        }
        for name in ("ours", "theirs")
    ]
    stub.add_response("list_training_jobs", {"TrainingJobSummaries": jobs}, {"StatusEquals": "InProgress"})
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "deepcloud:stack", "Value": stack.tag}]},
        {"ResourceArn": jobs[0]["TrainingJobArn"]},
    )
    stub.add_response("stop_training_job", {}, {"TrainingJobName": "ours"})
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "deepcloud:stack", "Value": "deepcloud/other"}]},
        {"ResourceArn": jobs[1]["TrainingJobArn"]},
    )
    stub.add_response("list_endpoint_configs", {"EndpointConfigs": []}, {})  # nothing retained to delete afterwards
    stub.add_response("list_models", {"Models": []}, {})
    use_clients(sagemaker=sagemaker)
    code, out, err = ops_aws("destroy")
    assert code == 0, out + err
    assert "stopping SageMaker training job ours" in out
    assert "theirs" not in out
    stub.assert_no_pending_responses()


def test_destroy_deletes_the_models_and_configurations_infra_retains(stack, ops_aws) -> None:
    """infra/ retains replaced SageMaker models and endpoint configurations, so `pulumi destroy` leaves them; once
    the endpoint is gone nothing can use them, and make destroy deletes the stack's (and only the stack's)."""
    sagemaker = client("sagemaker")
    name = f"deepcloud-{stack.name}"
    for n in (1, 2):
        sagemaker.create_model(
            ModelName=f"{name}-model-{n}",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/e",
            PrimaryContainer={"Image": f"{stack.serving_repository_url}:{n}"},
            Tags=stack.tags,
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{name}-config-{n}",
            Tags=stack.tags,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{name}-model-{n}",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
    sagemaker.create_model(
        ModelName=f"other-{stack.sfx}",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/e",
        PrimaryContainer={"Image": "other:1"},
        Tags=[{"Key": "deepcloud:stack", "Value": "x/y"}],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config-2", Tags=stack.tags)
    stack.standins.update(outputs={**stack.outputs, "endpoint_name": name})
    prepare(stack, keep=("key",), remaining=(stack.kms_key_arn,))

    code, out, err = ops_aws("destroy")

    assert code == 0, out + err
    assert f"deleted      superseded endpoint-config {name}-config-1" in out
    assert f"deleted      superseded model {name}-model-2" in out
    models = {m["ModelName"] for m in sagemaker.list_models()["Models"]}
    configs = {c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert not {f"{name}-model-1", f"{name}-model-2"} & models
    assert not {f"{name}-config-1", f"{name}-config-2"} & configs
    assert f"other-{stack.sfx}" in models, "another stack's model is not touched"


def hold_data(stack) -> str:
    """What real use leaves: a model, access logs, a pushed image; the trainer repository's name."""
    stack.put_model("train-1")
    client("s3").put_object(Bucket=stack.access_logs_bucket, Key="artifacts/2026-01-01-12-00-00-ABCD", Body=b"log")
    repository = stack.trainer_repository_url.split("/", 1)[1]
    client("ecr").put_image(
        repositoryName=repository,
        imageTag="v1",
        imageManifest=json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "digest": "sha256:" + "0" * 64,
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": 1,
                },
                "layers": [],
            }
        ),
    )
    return repository


def test_destroy_stops_before_anything_while_buckets_and_repositories_hold_data(stack, ops_aws) -> None:
    """With forceDestroy false `pulumi destroy` would delete the rest and then fail on BucketNotEmpty (the
    access-log bucket is never empty after real use) and RepositoryNotEmpty: say so before deleting anything."""
    hold_data(stack)
    task = stack.start_task()
    prepare(stack)
    code, out, err = ops_aws("destroy")
    line = one_line_error(code, err, "destroy stopped before deleting anything: ")
    assert f"s3://{stack.artifacts_bucket} (artifacts: 1 object versions)" in line, "the model.tar.gz"
    assert f"s3://{stack.access_logs_bucket} (access logs: 1 object versions)" in line
    assert f"{stack.trainer_repository_url} (trainer: 1 images)" in line
    assert "deepcloud:forceDestroy=false" in line
    assert (
        "`pulumi config set deepcloud:forceDestroy true`, `python -m infra.cli up`, and `make destroy TARGET=aws` "
        "again" in line
    )
    assert not [c for c in stack.standins.calls("pulumi") if c[:1] == ["destroy"]], "nothing deleted"
    assert (
        client("ecs").describe_tasks(cluster=stack.cluster_name, tasks=[task])["tasks"][0]["desiredStatus"] == "RUNNING"
    ), "nothing stopped"
    assert "left over (billable or still part of the stack):" in out, "the audit still runs"


def test_the_models_of_a_multi_model_endpoint_count_as_data_the_bucket_holds(stack, ops_aws) -> None:
    """A multi-model endpoint's models are objects under multi-model/models/ of the artifacts bucket: destroy treats
    them as every other stored object (BucketNotEmpty with forceDestroy false), and its endpoint goes with the stack."""
    stack.put_model("train-1", key="multi-model/models/train-1.tar.gz")
    stack.standins.update(
        outputs={
            **stack.outputs,
            "endpoint_mode": "multi-model",
            "models_prefix": f"s3://{stack.artifacts_bucket}/multi-model/models/",
        }
    )
    prepare(stack)
    code, _, err = ops_aws("destroy")
    line = one_line_error(code, err, "destroy stopped before deleting anything: ")
    assert f"s3://{stack.artifacts_bucket} (artifacts: 1 object versions)" in line, "the deployed copy"
    sagemaker, name = client("sagemaker"), f"deepcloud-{stack.name}-multi-model"
    sagemaker.create_model(
        ModelName=f"{name}-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/e",
        Tags=stack.tags,
        PrimaryContainer={
            "Image": f"{stack.serving_repository_url}:1",
            "Mode": "MultiModel",
            "ModelDataUrl": f"s3://{stack.artifacts_bucket}/multi-model/models/",
        },
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        Tags=stack.tags,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=stack.tags)
    stack.standins.update(
        outputs={**stack.outputs, "endpoint_mode": "multi-model", "endpoint_name": name, "force_destroy": True}
    )
    prepare(stack, keep=("key",), remaining=(stack.kms_key_arn,))
    code, out, err = ops_aws("destroy")
    assert code == 0, out + err  # the audit found nothing billable left
    assert name not in {e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]}
    assert f"{name}-model" not in {m["ModelName"] for m in sagemaker.list_models()["Models"]}


def test_with_force_destroy_the_data_goes_with_the_stack(stack, ops_aws) -> None:
    hold_data(stack)
    stack.standins.update(outputs={**stack.outputs, "force_destroy": True})
    prepare(stack, keep=("key",), remaining=(stack.kms_key_arn,))
    code, out, err = ops_aws("destroy")
    assert code == 0, out + err
    assert ["destroy", "--yes", "--skip-preview", "--exclude-protected", "--non-interactive"] in stack.standins.calls(
        "pulumi"
    )


def test_a_not_empty_error_from_pulumi_names_the_setting(stack, ops_aws) -> None:
    """A stack whose outputs do not say (applied before force_destroy was exported): pulumi's own error, then."""
    outputs = {k: v for k, v in stack.outputs.items() if k != "force_destroy"}
    stack.standins.update(
        outputs=outputs,
        fail={
            "destroy": (
                f"error: deleting S3 Bucket ({stack.access_logs_bucket}): operation error S3: DeleteBucket, "
                "https response error StatusCode: 409, api error BucketNotEmpty: "
                "The bucket you tried to delete is not empty"
            )
        },
    )
    code, _, err = ops_aws("destroy")
    line = one_line_error(code, err, "pulumi destroy failed (pulumi: deleting S3 Bucket")
    assert "BucketNotEmpty" in line
    assert (
        "deepcloud:forceDestroy is false; to delete them with the stack, copy out what you want to keep, then "
        "`pulumi config set deepcloud:forceDestroy true`" in line
    )
