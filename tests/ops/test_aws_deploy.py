"""`make deploy TARGET=aws` and `make rollback TARGET=aws`: the stack config they change, the endpoint wait, the smoke
request, the deploy history, and a failing endpoint.

S3, ECR, SageMaker, SageMaker Runtime and CloudWatch Logs are moto_server's; `pulumi up` is the stand-in, whose hook
does what the infra program would: a SageMaker Model (image and model data from the stack config), an
EndpointConfig, and the endpoint created or updated to it. The failing endpoint's DescribeEndpoint is stubbed with
botocore's Stubber: moto's endpoints are InService at once and never fail.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest

from ops.aws import images
from ops.aws.deploy import EndpointWatcher, torch_index
from ops.errors import OpsError
from ops.revision import revision as git_revision
from tests.conftest import REPO
from tests.ops.conftest import client, one_line_error, pulumi_ups, stubbed

RUN_A = "train-20260101-120000-aaaa"
RUN_B = "train-20260102-120000-bbbb"

HOOK_UP = """
# What `pulumi up` of infra/ does to SageMaker for a new model (tests/infra/test_rollout.py models it in full): the
# provider creates a new Model and EndpointConfiguration (auto-named, tagged by the default tags), then UpdateEndpoint
# onto the configuration and waits; the replaced ones are retained, not deleted (retain_on_delete). The stack's state
# then holds the new two, which `pulumi stack export` lists ("remaining"), and its outputs name the new configuration.
sm = boto3.session.Session().client("sagemaker")
cfg, out = state["config"], state["outputs"]
n = state["n"] = state.get("n", 0) + 1
name = out.get("endpoint_name") or "deepcloud-" + state["stack"]
tags = [{"Key": "deepcloud:stack", "Value": "deepcloud/" + state["stack"]}]
model = f"{name}-model-{n}"
container = {"Image": out["serving_repository_url"] + ":" + cfg["deepcloud:servingImageTag"],
             "ModelDataUrl": "s3://" + out["artifacts_bucket"] + "/" + cfg["deepcloud:modelArtifact"]}
model_arn = sm.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/endpoint", Tags=tags,
                            PrimaryContainer=container)["ModelArn"]
config = f"{name}-config-{n}"
config_arn = sm.create_endpoint_config(EndpointConfigName=config, Tags=tags, ProductionVariants=[{
    "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 2,
    "InstanceType": "ml.m5.large"}])["EndpointConfigArn"]
try:
    sm.describe_endpoint(EndpointName=name)
    if not state.get("roll_back"):  # SageMaker's blue/green rollback leaves the endpoint on its old configuration
        sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
except sm.exceptions.ClientError:
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tags)
out["endpoint_name"] = name
out["endpoint_config_name"] = config
state["remaining"] = [a for a in state.get("remaining", []) if ":sagemaker:" not in a] + [model_arn, config_arn]
"""


ENDPOINT_QUOTA = "ml.m5.large for endpoint usage"


def endpoint_quotas(value: float, calls: int):
    """Service Quotas, stubbed (moto has no SageMaker quotas): ListServiceQuotas for SageMaker, `calls` times."""
    quotas, stub = stubbed("service-quotas")
    for _ in range(calls):
        stub.add_response(
            "list_service_quotas",
            {
                "Quotas": [
                    {
                        "ServiceCode": "sagemaker",
                        "QuotaCode": "L-11111111",
                        "QuotaName": "ml.g5.xlarge for endpoint usage",
                        "Value": 100.0,
                    },
                    {
                        "ServiceCode": "sagemaker",
                        "QuotaCode": "L-22222222",
                        "QuotaName": ENDPOINT_QUOTA,
                        "Value": value,
                    },
                ]
            },
            {"ServiceCode": "sagemaker"},
        )
    return quotas, stub


@pytest.fixture
def deployable(stack, moto_server, use_clients):
    """Two trained runs in the artifacts bucket, the stand-in's `pulumi up` making the endpoint, moto's runtime
    answering invocations with a prediction, and an endpoint quota enough for a rollout (for up to four deploys)."""
    use_clients(service_quotas=endpoint_quotas(8.0, calls=4)[0])
    stack.put_model(RUN_A)
    stack.put_model(RUN_B)
    stack.standins.update(hooks={"up": HOOK_UP})
    answer = {"predictions": [{"label": "0", "index": 0, "probabilities": [1.0] + [0.0] * 9}]}
    request = urllib.request.Request(
        f"{moto_server}/moto-api/static/sagemaker/endpoint-results",
        method="POST",
        data=json.dumps({"results": [{"Body": json.dumps(answer), "ContentType": "application/json"}]}).encode(),
    )
    urllib.request.urlopen(request).read()
    return stack


def serving_tag() -> str:
    digest = images.content_digest(REPO, images.IMAGES["serving"], {"TORCH_INDEX": "cpu"})
    return f"{git_revision(REPO, short=True)}-{digest[:12]}"


def history(stack) -> list[dict]:
    body = client("s3").get_object(Bucket=stack.artifacts_bucket, Key="deploys/history.json")["Body"].read()
    return json.loads(body)


def config_sets(stack) -> list[tuple[str, str]]:
    return [(c[2], c[3]) for c in stack.standins.calls("pulumi") if c[:2] == ["config", "set"]]


def test_deploy_sets_the_config_runs_pulumi_up_waits_and_smoke_tests(deployable, ops_aws) -> None:
    stack = deployable
    code, out, err = ops_aws("deploy")
    assert code == 0, err
    assert config_sets(stack) == [
        ("deepcloud:modelArtifact", f"models/{RUN_B}/model.tar.gz"),
        ("deepcloud:servingImageTag", serving_tag()),
    ], "the newest run, the built image"
    assert len(pulumi_ups(stack)) == 1
    build = next(c for c in stack.standins.calls("docker") if c[0] == "build")
    assert "TORCH_INDEX=cpu" in build, "a CPU endpoint (ml.m5.large by default) gets the CPU torch build"
    name = f"deepcloud-{stack.name}"
    assert f"endpoint     {name} InService, serving s3://{stack.artifacts_bucket}/models/{RUN_B}/model.tar.gz" in out
    assert "smoke        5 requests of shape [1, 8, 8]: label '0'; latency first" in out
    entries = history(stack)
    assert len(entries) == 1
    assert entries[0]["result"] == "InService"
    assert entries[0]["run_id"] == RUN_B
    assert entries[0]["kind"] == "deploy"
    assert entries[0]["previous"] == {"model_artifact": None, "serving_image_tag": None}
    assert entries[0]["smoke"]["label"] == "0"


def test_deploy_a_chosen_run_then_rollback_to_it(deployable, ops_aws, monkeypatch) -> None:
    stack = deployable
    monkeypatch.setenv("MODEL", RUN_A)
    assert ops_aws("deploy")[0] == 0
    monkeypatch.delenv("MODEL")
    assert ops_aws("deploy", "--model", RUN_B)[0] == 0
    docker_calls = len(stack.standins.calls("docker"))
    code, out, err = ops_aws("rollback")
    assert code == 0, err
    assert f"==> rollback (aws): back to run {RUN_A}" in out
    assert config_sets(stack)[-2:] == [
        ("deepcloud:modelArtifact", f"models/{RUN_A}/model.tar.gz"),
        ("deepcloud:servingImageTag", serving_tag()),
    ]
    assert stack.standins.read()["config"]["deepcloud:modelArtifact"] == f"models/{RUN_A}/model.tar.gz"
    assert len(stack.standins.calls("docker")) == docker_calls, "rollback builds nothing"
    assert [(e["kind"], e["run_id"]) for e in history(stack)] == [
        ("deploy", RUN_A),
        ("deploy", RUN_B),
        ("rollback", RUN_A),
    ]
    assert len(pulumi_ups(stack)) == 3, "deploy, deploy, rollback: each pulumi up gated by the policy pack"
    assert f"serving s3://{stack.artifacts_bucket}/models/{RUN_A}/model.tar.gz" in out


def test_rollback_with_nothing_to_go_back_to(deployable, ops_aws) -> None:
    code, _, err = ops_aws("rollback")
    one_line_error(code, err, "nothing to roll back to: no successful deploy in the history")
    assert ops_aws("deploy")[0] == 0
    assert ops_aws("deploy")[0] == 0
    code, _, err = ops_aws("rollback")
    one_line_error(code, err, f"nothing to roll back to: every deploy in the history served models/{RUN_B}/")


def sagemaker_names(kind: str) -> set[str]:
    sagemaker = client("sagemaker")
    if kind == "model":
        return {m["ModelName"] for m in sagemaker.list_models()["Models"]}
    return {c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]}


def test_a_deploy_deletes_what_the_one_before_left_once_the_new_one_serves(deployable, ops_aws) -> None:
    """infra/ retains replaced models and configurations (tests/infra/test_rollout.py); ops deletes them once
    DescribeEndpoint shows the endpoint on the new configuration."""
    stack = deployable
    name = f"deepcloud-{stack.name}"
    assert ops_aws("deploy", "--model", RUN_A)[0] == 0
    code, out, err = ops_aws("deploy", "--model", RUN_B)
    assert code == 0, err
    assert f"deleted      superseded endpoint-config {name}-config-1" in out
    assert f"deleted      superseded model {name}-model-1" in out
    configs, models = sagemaker_names("config"), sagemaker_names("model")
    assert f"{name}-config-2" in configs
    assert f"{name}-config-1" not in configs
    assert f"{name}-model-2" in models
    assert f"{name}-model-1" not in models


def test_an_update_that_was_rolled_back_is_a_failure(deployable, ops_aws) -> None:
    stack = deployable
    name = f"deepcloud-{stack.name}"
    assert ops_aws("deploy", "--model", RUN_A)[0] == 0
    stack.standins.update(roll_back=True)  # SageMaker's blue/green rollback: the endpoint stays on the old config
    code, _, err = ops_aws("deploy", "--model", RUN_B)
    one_line_error(
        code,
        err,
        f"deploy of run {RUN_B} failed: endpoint {name} is InService on configuration "
        f"{name}-config-1, not {name}-config-2 that pulumi up applied: the rollout was "
        "rolled back",
    )
    assert stack.standins.read()["config"]["deepcloud:modelArtifact"] == f"models/{RUN_A}/model.tar.gz", (
        "the config is put back to what is serving"
    )
    assert {f"{name}-config-1", f"{name}-config-2"} <= sagemaker_names("config"), (
        "the serving configuration and the one in the stack's state are both kept"
    )
    assert {f"{name}-model-1", f"{name}-model-2"} <= sagemaker_names("model")


def test_a_deploy_that_cannot_delete_the_superseded_ones_still_stands(deployable, ops_aws, monkeypatch) -> None:
    """They cost nothing and the next deploy or destroy tries again: a warning, not a failed deploy."""
    from botocore.exceptions import ClientError

    from ops.aws import superseded

    def denied(ctx, endpoint):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "DeleteModel")

    monkeypatch.setattr(superseded, "prune", denied)
    code, out, err = ops_aws("deploy", "--model", RUN_A)
    assert code == 0, err
    assert "warning      superseded models and configurations kept: AWS denied DeleteModel: not allowed" in out
    assert history(deployable)[-1]["result"] == "InService"


def test_a_rolled_back_update_of_the_same_model_is_a_failure(deployable, ops_aws) -> None:
    """A new endpoint configuration for the same model and image (another instance type or count, say) rolled back
    looks served by model and image alone; DescribeEndpoint.EndpointConfigName tells."""
    stack = deployable
    name = f"deepcloud-{stack.name}"
    assert ops_aws("deploy", "--model", RUN_A)[0] == 0
    stack.standins.update(roll_back=True)
    code, _, err = ops_aws("deploy", "--model", RUN_A)
    one_line_error(
        code,
        err,
        f"deploy of run {RUN_A} failed: endpoint {name} is InService on configuration "
        f"{name}-config-1, not {name}-config-2 that pulumi up applied",
    )
    assert [e["result"] for e in history(stack)] == ["InService", "Failed"]


def test_an_endpoint_whose_last_update_failed_is_not_served(stack, tmp_path) -> None:
    """After a failed update SageMaker can leave the endpoint InService with a FailureReason (terraform-provider-aws
    #39099); DescribeEndpoint is stubbed: moto never fails an update."""
    name = f"deepcloud-{stack.name}"
    sagemaker, stub = stubbed("sagemaker")
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": name,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}",
            "EndpointConfigName": f"{name}-config-2",
            "EndpointStatus": "InService",
            "CreationTime": datetime.now(UTC),
            "LastModifiedTime": datetime.now(UTC),
            "FailureReason": "Failed to update endpoint.",
        },
        {"EndpointName": name},
    )
    watcher = EndpointWatcher(stack.context(tmp_path, {"sagemaker": sagemaker}), name)
    with pytest.raises(OpsError, match=rf"^endpoint {name} is InService but its last update failed: Failed to"):
        watcher.check_serves(f"models/{RUN_A}/model.tar.gz", "abc", f"{name}-config-2")
    watcher.close()
    stub.assert_no_pending_responses()


def test_a_failing_endpoint_prints_its_first_traceback(deployable, ops_aws, use_clients, capsys) -> None:
    stack = deployable
    name = f"deepcloud-{stack.name}"
    outputs = {**stack.outputs, "endpoint_name": name}
    stack.standins.update(
        outputs=outputs,
        fail={
            "up": "error: 1 error occurred: waiting for SageMaker AI Endpoint "
            f"({name}) create: unexpected state 'Failed'"
        },
    )
    logs = client("logs")
    group = f"/aws/sagemaker/Endpoints/{name}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0abc")
    now = int(datetime.now(UTC).timestamp() * 1000)
    lines = [
        "starting server",
        "Traceback (most recent call last):",
        '  File "/opt/program/serving/app.py", line 3, in <module>',
        "    import torch",
        "ModuleNotFoundError: No module named 'torch'",
        "Traceback (most recent call last):",
        "  second traceback, not printed",
        "RuntimeError: later",
    ]
    logs.put_log_events(
        logGroupName=group,
        logStreamName="AllTraffic/i-0abc",
        logEvents=[{"timestamp": now + 5000 + i, "message": m} for i, m in enumerate(lines)],
    )
    sagemaker, stub = stubbed("sagemaker")
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": name,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}",
            "EndpointConfigName": f"{name}-config-1",
            "EndpointStatus": "Failed",
            "CreationTime": datetime.now(UTC),
            "LastModifiedTime": datetime.now(UTC),
            "FailureReason": "The primary container for production variant AllTraffic did not pass the ping health "
            "check.",
        },
        {"EndpointName": name},
    )
    use_clients(sagemaker=sagemaker)

    code, out, err = ops_aws("deploy")

    one_line_error(
        code,
        err,
        f"deploy of run {RUN_B} failed: endpoint {name} is Failed: The primary container for "
        "production variant AllTraffic did not pass the ping health check.; "
        "ModuleNotFoundError: No module named 'torch'; config put back to no model",
    )
    assert "first traceback in the endpoint's logs:\n  Traceback (most recent call last):" in out
    assert "  ModuleNotFoundError: No module named 'torch'" in out
    assert "second traceback" not in out.split("first traceback")[1]
    config = stack.standins.read()["config"]
    assert "deepcloud:modelArtifact" not in config
    assert "deepcloud:servingImageTag" not in config
    assert [c[:3] for c in stack.standins.calls("pulumi") if c[:2] == ["config", "rm"]] == [
        ["config", "rm", "deepcloud:modelArtifact"],
        ["config", "rm", "deepcloud:servingImageTag"],
    ]
    assert history(stack)[-1]["result"] == "Failed"
    stub.assert_no_pending_responses()


def test_the_first_deploy_finds_the_endpoint_by_the_stack_tag(deployable, tmp_path, capsys) -> None:
    """Before the first deploy the stack has no endpoint_name output; while `pulumi up` creates the endpoint, the
    watcher finds it by its tag to show its status and logs."""
    stack = deployable
    sagemaker = client("sagemaker")
    name = f"deepcloud-{stack.name}"
    sagemaker.create_model(
        ModelName=f"{name}-m",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/endpoint",
        PrimaryContainer={"Image": f"{stack.serving_repository_url}:abc"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-c",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        Tags=stack.tags,
    )
    watcher = EndpointWatcher(stack.context(tmp_path), None)
    assert watcher.poll() == "", "no endpoint yet (its config, also tagged, does not count)"
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c", Tags=stack.tags)
    assert watcher.poll() == "InService"
    assert watcher.name == name
    watcher.close()
    assert f"endpoint {name} InService" in capsys.readouterr().out


def test_deploy_checks_the_endpoint_quota_for_two_fleets_first(deployable, use_clients, ops_aws) -> None:
    """A blue/green rollout runs the new fleet beside the old (as large as auto scaling made it, up to
    endpointMaxInstances=4): 8 instances at most, before anything is built or changed."""
    stack = deployable
    quotas, stub = endpoint_quotas(4.0, calls=1)
    use_clients(service_quotas=quotas)
    code, _, err = ops_aws("deploy")
    one_line_error(
        code,
        err,
        f"quota '{ENDPOINT_QUOTA}' (L-22222222) in us-east-1 is 4 instances, below the 8 a "
        "blue/green rollout can need (the new fleet beside the old, each up to "
        "endpointMaxInstances=4): request 8 with `aws service-quotas "
        "request-service-quota-increase --service-code sagemaker --quota-code L-22222222 "
        "--desired-value 8 --region us-east-1`",
    )
    assert not stack.standins.calls("docker"), "nothing built"
    assert not pulumi_ups(stack), "nothing changed"
    stub.assert_no_pending_responses()


def test_deploy_with_enough_endpoint_quota_says_so(deployable, ops_aws) -> None:
    code, out, err = ops_aws("deploy")
    assert code == 0, err
    assert (
        f"ok    endpoint quota   '{ENDPOINT_QUOTA}' (L-22222222) in us-east-1 is 8 instances; a rollout of up "
        "to 4 needs 8"
    ) in out


def test_deploy_before_any_training(stack, ops_aws) -> None:
    code, _, err = ops_aws("deploy")
    one_line_error(
        code, err, f"no trained model in s3://{stack.artifacts_bucket}/models/: run `make train TARGET=aws` first"
    )


def test_deploy_of_an_unknown_run(stack, ops_aws) -> None:
    code, _, err = ops_aws("deploy", "--model", "train-nope")
    one_line_error(
        code,
        err,
        f"no model for run train-nope: s3://{stack.artifacts_bucket}/models/train-nope/model.tar.gz does not exist",
    )


def test_gpu_endpoints_get_the_cuda_serving_image() -> None:
    assert torch_index("ml.g5.xlarge") == "cu126"
    assert torch_index("ml.p4d.24xlarge") == "cu126"
    assert torch_index("ml.m5.large") == "cpu"
    assert torch_index(None) == "cpu"
