"""`make destroy TARGET=aws`: stop what runs, `pulumi destroy`, then audit by the stack tag, with and without
leftovers.

ECS, S3, KMS, CloudWatch Logs and the Resource Groups Tagging API are moto_server's. The running task is a real
moto task on a registered container instance (moto's RunTask needs one); its task definition uses bridge
networking because moto 5.2.5's RunTask fails for awsvpc. `pulumi destroy` is the stand-in, whose hook deletes in
moto what the infra program's destroy would. The SageMaker job in progress is stubbed with botocore's Stubber:
moto's training jobs are Completed as soon as they are created.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.ops.conftest import REGION, client, one_line_error, stubbed

HOOK_DESTROY = '''
session = boto3.session.Session()
out = state["outputs"]
keep = state.get("keep", [])
s3 = session.client("s3")
if "artifacts" not in keep:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=out["artifacts_bucket"]):
        for v in page.get("Versions", []):
            s3.delete_object(Bucket=out["artifacts_bucket"], Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=out["artifacts_bucket"])
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
'''


def prepare(stack, keep: tuple[str, ...] = (), remaining: tuple[str, ...] = ()) -> None:
    """`pulumi destroy` deletes all but ``keep``; the stack's state keeps ``remaining`` (as --exclude-protected
    keeps the protected data bucket and what it needs)."""
    state = stack.standins.read()
    state.update(hooks={"destroy": HOOK_DESTROY}, keep=list(keep), log_group=stack.log_group,
                 remaining=[f"arn:aws:s3:::{stack.data_bucket}", *remaining])
    stack.standins.write(state)


def test_destroy_stops_the_task_and_leaves_only_the_retained_bucket(stack, ops_aws) -> None:
    task = stack.start_task()
    prepare(stack, keep=("key",), remaining=(stack.kms_key_arn,))
    code, out, err = ops_aws("destroy")
    assert code == 0, out + err
    assert f"stopping ECS task {task}" in out
    assert "stopped      1 running task(s)/job(s)" in out
    assert ["destroy", "--yes", "--skip-preview", "--exclude-protected", "--non-interactive"] in \
        stack.standins.calls("pulumi")
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
    one_line_error(code, err, f"2 resource(s) tagged deepcloud:stack={stack.tag} are left (table above): run "
                              "`make destroy TARGET=aws` again in a few minutes")
    leftover = out.split("left over (billable or still part of the stack):")[1].split("retained by design:")[0]
    rows = [line.split() for line in leftover.strip().splitlines()]
    assert rows[0] == ["kind", "resource", "note"]
    assert [r[:2] for r in rows[1:]] == [
        ["logs:log-group", f"arn:aws:logs:{REGION}:123456789012:log-group:{stack.log_group}"],
        ["s3:bucket", f"arn:aws:s3:::{stack.artifacts_bucket}"]]
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
    jobs = [{"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
             "CreationTime": datetime.now(UTC), "TrainingJobStatus": "InProgress"} for name in ("ours", "theirs")]
    stub.add_response("list_training_jobs", {"TrainingJobSummaries": jobs}, {"StatusEquals": "InProgress"})
    stub.add_response("list_tags", {"Tags": [{"Key": "deepcloud:stack", "Value": stack.tag}]},
                      {"ResourceArn": jobs[0]["TrainingJobArn"]})
    stub.add_response("stop_training_job", {}, {"TrainingJobName": "ours"})
    stub.add_response("list_tags", {"Tags": [{"Key": "deepcloud:stack", "Value": "deepcloud/other"}]},
                      {"ResourceArn": jobs[1]["TrainingJobArn"]})
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
        sagemaker.create_model(ModelName=f"{name}-model-{n}", ExecutionRoleArn="arn:aws:iam::123456789012:role/e",
                               PrimaryContainer={"Image": f"{stack.serving_repository_url}:{n}"}, Tags=stack.tags)
        sagemaker.create_endpoint_config(EndpointConfigName=f"{name}-config-{n}", Tags=stack.tags, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": f"{name}-model-{n}", "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large"}])
    sagemaker.create_model(ModelName=f"other-{stack.sfx}", ExecutionRoleArn="arn:aws:iam::123456789012:role/e",
                           PrimaryContainer={"Image": "other:1"}, Tags=[{"Key": "deepcloud:stack", "Value": "x/y"}])
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
