"""`make deploy`, `make predict`, `make rollback` TARGET=aws on a multi-model endpoint (deepcloud:endpointMode
multi-model, ops/aws/multi_model.py): a deploy is a server-side copy under the endpoint's S3 prefix, no `pulumi up`;
requests name the model as TargetModel (docs/aws-behaviours.md S19: SageMaker loads a model from the prefix on the
first InvokeEndpoint whose TargetModel names it; adding one needs no endpoint update).

S3 is moto_server's (CopyObject included). SageMaker Runtime is botocore's Stubber on the real sagemaker-runtime
service model: moto's InvokeEndpoint answers from a queue whatever TargetModel says, so only the Stubber can check that
each request names the model.
"""

from __future__ import annotations

import io
import json

from botocore.stub import ANY

from tests.ops.conftest import client, one_line_error, pulumi_ups, stubbed
from tests.ops.test_aws_deploy import endpoint_quotas, history
from tests.ops.test_aws_modes import put_model_with_metrics, stack_home, write_test_set

RUN = "train-20260104-120000-dddd"
OTHER = "train-20260105-120000-eeee"
HOOK_CREATE = """
# What the first `pulumi up` of infra/ does with deepcloud:endpointMode multi-model: the endpoint, and its outputs.
sm = boto3.session.Session().client("sagemaker")
out = state["outputs"]
name = "deepcloud-" + state["stack"] + "-multi-model"
tags = [{"Key": "deepcloud:stack", "Value": "deepcloud/" + state["stack"]}]
prefix = "s3://" + out["artifacts_bucket"] + "/multi-model/models/"
sm.create_model(ModelName=name + "-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/endpoint", Tags=tags,
                PrimaryContainer={"Image": out["serving_repository_url"] + ":" + state["config"][
                    "deepcloud:servingImageTag"], "Mode": "MultiModel", "ModelDataUrl": prefix})
sm.create_endpoint_config(EndpointConfigName=name + "-config", Tags=tags, ProductionVariants=[{
    "VariantName": "AllTraffic", "ModelName": name + "-model", "InitialInstanceCount": 2,
    "InstanceType": "ml.m5.large"}])
sm.create_endpoint(EndpointName=name, EndpointConfigName=name + "-config", Tags=tags)
out.update(endpoint_name=name, endpoint_config_name=name + "-config", endpoint_mode="multi-model",
           models_prefix=prefix)
"""


def multi_model(stack, endpoint: bool = True):
    """The stack's outputs with a multi-model endpoint (as infra/__main__.py exports them), or only its mode set."""
    name = f"deepcloud-{stack.name}-multi-model"
    outputs = {
        **stack.outputs,
        "endpoint_mode": "multi-model",
        "endpoint_name": name,
        "models_prefix": f"s3://{stack.artifacts_bucket}/multi-model/models/",
    }
    if not endpoint:
        outputs = {**stack.outputs, "endpoint_mode": "realtime"}
    config = {"aws:region": "us-east-1", "deepcloud:endpointMode": "multi-model", "deepcloud:servingImageTag": "0.1.0"}
    stack.standins.update(outputs=outputs, config=config)
    return name


def runtime_answers(endpoint: str, target: str, labels: list[str]):
    """A stubbed sagemaker-runtime expecting one InvokeEndpoint per label, each naming `target` as its TargetModel."""
    runtime, stub = stubbed("sagemaker-runtime")
    for label in labels:
        answer = json.dumps({"predictions": [{"label": label, "index": int(label)}]}).encode()
        stub.add_response(
            "invoke_endpoint",
            {"Body": io.BytesIO(answer), "ContentType": "application/json"},
            {
                "EndpointName": endpoint,
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": ANY,
                "TargetModel": target,
            },
        )
    return runtime, stub


def test_deploy_copies_the_run_under_the_prefix_without_pulumi_up(stack, use_clients, ops_aws) -> None:
    name = multi_model(stack)
    original = stack.put_model(RUN)
    runtime, stub = runtime_answers(name, f"{RUN}.tar.gz", ["0"] * 5)
    use_clients(sagemaker_runtime=runtime)
    code, out, err = ops_aws("deploy", "--model", RUN)
    assert code == 0, err
    s3 = client("s3")
    copied = s3.get_object(Bucket=stack.artifacts_bucket, Key=f"multi-model/models/{RUN}.tar.gz")["Body"].read()
    assert copied == s3.get_object(Bucket=stack.artifacts_bucket, Key=original)["Body"].read()
    assert (
        f"copied       s3://{stack.artifacts_bucket}/{original} -> s3://{stack.artifacts_bucket}/multi-model/"
        f"models/{RUN}.tar.gz (server-side; no pulumi up)"
    ) in out
    assert "smoke        5 requests of shape [1, 8, 8]: label '0'" in out
    assert (
        f"invoke       make predict TARGET=aws MODEL={RUN}, or sagemaker-runtime InvokeEndpoint(EndpointName="
        f"{name}, TargetModel={RUN}.tar.gz)" in out
    )
    stub.assert_no_pending_responses()
    assert pulumi_ups(stack) == [], "a model is added by the copy alone"
    assert not [c for c in stack.standins.calls("pulumi") if c[:2] == ["config", "set"]], "the config stays"
    (entry,) = history(stack)
    assert (entry["mode"], entry["run_id"], entry["result"]) == ("multi-model", RUN, "InService")
    assert entry["model_artifact"] == f"multi-model/models/{RUN}.tar.gz"


def test_the_first_deploy_creates_the_endpoint_with_one_pulumi_up(stack, use_clients, ops_aws) -> None:
    """Just after the mode was set there is no endpoint yet: the serving image is pushed and `pulumi up` (gated by
    the policy pack) creates it; the next deploy is a copy only."""
    multi_model(stack, endpoint=False)
    stack.put_model(RUN)
    stack.put_model(OTHER)
    stack.standins.update(hooks={"up": HOOK_CREATE})
    name = f"deepcloud-{stack.name}-multi-model"
    runtime, stub = runtime_answers(name, f"{RUN}.tar.gz", ["0"] * 5)
    use_clients(sagemaker_runtime=runtime, service_quotas=endpoint_quotas(8.0, calls=1)[0])
    code, out, err = ops_aws("deploy", "--model", RUN)
    assert code == 0, err
    assert "no multi-model endpoint yet: pushing the serving image and running `pulumi up` once" in out
    assert (
        f"endpoint     {name} InService, serving the models under s3://{stack.artifacts_bucket}/multi-model/"
        "models/" in out
    )
    assert len(pulumi_ups(stack)) == 1
    assert client("s3").head_object(Bucket=stack.artifacts_bucket, Key=f"multi-model/models/{RUN}.tar.gz")
    runtime, stub = runtime_answers(name, f"{OTHER}.tar.gz", ["0"] * 5)
    use_clients(sagemaker_runtime=runtime)
    code, out, err = ops_aws("deploy", "--model", OTHER)
    assert code == 0, err
    assert len(pulumi_ups(stack)) == 1, "the endpoint exists now: a copy only"
    stub.assert_no_pending_responses()


def test_predict_targets_the_model_that_model_names(stack, use_clients, ops_aws, aws_env) -> None:
    name = multi_model(stack)
    put_model_with_metrics(stack, RUN, 2 / 3)
    write_test_set(stack_home(aws_env), ["3", "4", "5"])
    code, _, err = ops_aws("predict")
    one_line_error(
        code,
        err,
        f"endpoint {name} is multi-model: give MODEL=<run-id>, the deployed run to send the "
        "images to (`make deploy TARGET=aws MODEL=<run-id>` deploys one)",
    )
    code, _, err = ops_aws("predict", "--model", RUN)
    one_line_error(
        code,
        err,
        f"run {RUN} is not on multi-model endpoint {name} (no s3://{stack.artifacts_bucket}/"
        f"multi-model/models/{RUN}.tar.gz): run `make deploy TARGET=aws MODEL={RUN}` first",
    )
    client("s3").copy_object(
        Bucket=stack.artifacts_bucket,
        Key=f"multi-model/models/{RUN}.tar.gz",
        CopySource={"Bucket": stack.artifacts_bucket, "Key": f"models/{RUN}/model.tar.gz"},
    )
    runtime, stub = runtime_answers(name, f"{RUN}.tar.gz", ["3", "4", "9"])
    use_clients(sagemaker_runtime=runtime)
    code, out, err = ops_aws("predict", "--model", RUN)
    assert code == 0, err
    assert "==> predict (aws, multi-model): " in out
    assert "accuracy over HTTP   0.6667  (2/3)" in out
    assert "accuracy in-process  0.6667  (trainer, same artifact and images)  match" in out
    stub.assert_no_pending_responses()


def test_rollback_has_nothing_to_do_on_a_multi_model_endpoint(stack, ops_aws) -> None:
    name = multi_model(stack)
    code, _, err = ops_aws("rollback")
    one_line_error(code, err, f"endpoint {name} is multi-model: there is nothing to roll back")


def test_deploy_of_an_unknown_run_copies_nothing(stack, ops_aws) -> None:
    multi_model(stack)
    code, _, err = ops_aws("deploy", "--model", RUN)
    one_line_error(code, err, f"no model for run {RUN}")
    assert "Contents" not in client("s3").list_objects_v2(Bucket=stack.artifacts_bucket, Prefix="multi-model/")
