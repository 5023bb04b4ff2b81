"""`make deploy`, `make predict` and `make status` TARGET=aws for each endpoint mode (deepcloud:endpointMode), against
moto_server's SageMaker, SageMaker Runtime and S3, with the pulumi stand-in's `pulumi up` doing what infra/ does.

- serverless: the endpoint configuration has a ServerlessConfig variant and no instances (docs/aws-behaviours.md S13);
  requests are InvokeEndpoint, as for real-time; no endpoint-usage quota applies.
- async: the configuration has an AsyncInferenceConfig writing to async/output/ (S16); a request is put in S3 and sent
  with InvokeEndpointAsync, which answers at once with the OutputLocation the result will be written to; ops reads it
  from there. moto writes its queued result to that location at once (its own bucket), so the wait is modelled by a
  location that answers NoSuchKey first (a stubbed S3 GetObject).
"""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request

import pytest
from PIL import Image

from ops.aws import invoke
from ops.errors import OpsError
from tests.ops.conftest import client, endpoint_quotas_stub, one_line_error, pulumi_ups

RUN = "train-20260103-120000-cccc"

HOOK_MODES = """
# What `pulumi up` of infra/ does for a serverless or async endpoint (infra/components/inference_endpoint.py): a Model,
# an EndpointConfig of the mode, the endpoint (named <stack>-<mode>) created or updated; outputs name the mode.
sm = boto3.session.Session().client("sagemaker")
cfg, out = state["config"], state["outputs"]
mode = state["mode"]
n = state["n"] = state.get("n", 0) + 1
name = "deepcloud-" + state["stack"] + "-" + mode
tags = [{"Key": "deepcloud:stack", "Value": "deepcloud/" + state["stack"]}]
model = f"{name}-model-{n}"
container = {"Image": out["serving_repository_url"] + ":" + cfg["deepcloud:servingImageTag"],
             "ModelDataUrl": "s3://" + out["artifacts_bucket"] + "/" + cfg["deepcloud:modelArtifact"]}
sm.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/endpoint", Tags=tags,
                PrimaryContainer=container)
variant = {"VariantName": "AllTraffic", "ModelName": model}
extra = {}
prefix = "s3://" + out["artifacts_bucket"] + "/async/"
if mode == "serverless":
    variant["ServerlessConfig"] = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
else:
    variant.update(InstanceType="ml.m5.large", InitialInstanceCount=1)
    extra["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": prefix + "output/",
                                                      "S3FailurePath": prefix + "failures/"}}
config = f"{name}-config-{n}"
sm.create_endpoint_config(EndpointConfigName=config, Tags=tags, ProductionVariants=[variant], **extra)
try:
    sm.describe_endpoint(EndpointName=name)
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
except sm.exceptions.ClientError:
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=tags)
out.update(endpoint_name=name, endpoint_config_name=config, endpoint_mode=mode,
           async_prefix=prefix if mode == "async" else None)
"""


def put_model_with_metrics(stack, run_id: str, accuracy: float) -> None:
    buffer = io.BytesIO()
    manifest = {
        "format_version": 1,
        "input": {"shape": [1, 8, 8]},
        "labels": [str(i) for i in range(10)],
        "metrics": {"test": {"accuracy": accuracy}},
    }
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("model.pt2", b"weights")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    client("s3").put_object(Bucket=stack.artifacts_bucket, Key=f"models/{run_id}/model.tar.gz", Body=buffer.getvalue())


def drain_results() -> None:
    """Empty moto's result queues, which outlive the tests that filled them (one moto_server per session): a new
    request takes the next queued result until only moto's default answer is left."""
    import uuid

    runtime, s3 = client("sagemaker-runtime"), client("s3")
    while runtime.invoke_endpoint(EndpointName="drain", Body=uuid.uuid4().hex.encode())["Body"].read() != b"body":
        pass
    while True:
        location = runtime.invoke_endpoint_async(EndpointName="drain", InputLocation=uuid.uuid4().hex)
        bucket, _, key = location["OutputLocation"].removeprefix("s3://").partition("/")
        try:
            if json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == {"default": "response"}:
                return
        except s3.exceptions.NoSuchKey:  # a queued failure went to the failure location
            continue


def queue_results(moto_server: str, labels: list[str], kind: str) -> None:
    """Answers moto's runtime gives, in order: InvokeEndpoint's (`endpoint-results`) or the async ones."""
    drain_results()
    answers = [json.dumps({"predictions": [{"label": label, "index": int(label)}]}) for label in labels]
    if kind == "async":
        body = {"results": [{"data": answer} for answer in answers]}
    else:
        body = {"results": [{"Body": answer, "ContentType": "application/json"} for answer in answers]}
    request = urllib.request.Request(
        f"{moto_server}/moto-api/static/sagemaker/"
        f"{'async-endpoint-results' if kind == 'async' else 'endpoint-results'}",
        method="POST",
        data=json.dumps(body).encode(),
    )
    urllib.request.urlopen(request).read()


def write_test_set(home, labels: list[str]) -> None:
    channel = home / "data" / "digits" / "test"
    channel.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for n, label in enumerate(labels):
        Image.new("L", (8, 8), color=n).save(channel / f"{n}.png")
        rows.append(f"{n}.png,{label}")
    (channel / "manifest.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def moded(stack, use_clients):
    def setup(mode: str, quota_calls: int = 0):
        if quota_calls:
            use_clients(service_quotas=endpoint_quotas_stub(8.0, quota_calls)[0])
        put_model_with_metrics(stack, RUN, 2 / 3)
        stack.standins.update(hooks={"up": HOOK_MODES}, mode=mode, outputs={**stack.outputs, "endpoint_mode": mode})
        return stack

    return setup


def test_serverless_deploy_predict_and_status(moded, moto_server, ops_aws, aws_env) -> None:
    stack = moded("serverless")
    name = f"deepcloud-{stack.name}-serverless"
    queue_results(moto_server, ["0"], "sync")  # moto answers the same body with the same result: one for the smoke
    code, out, err = ops_aws("deploy", "--model", RUN)
    assert code == 0, err
    assert "ok    endpoint quota   serverless endpoint: no instances" in out, "no endpoint-usage quota applies"
    assert f"endpoint     {name} InService" in out
    assert "smoke        5 requests of shape [1, 8, 8]: label '0'" in out
    assert len(pulumi_ups(stack)) == 1
    write_test_set(stack_home(aws_env), ["3", "4", "5"])
    queue_results(moto_server, ["3", "4", "9"], "sync")
    code, out, err = ops_aws("predict")
    assert code == 0, err
    assert "==> predict (aws, serverless): " in out
    assert "accuracy over HTTP   0.6667  (2/3)" in out
    assert "accuracy in-process  0.6667  (trainer, same artifact and images)  match" in out
    code, out, err = ops_aws("status")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("endpoint") and name in line)
    assert "InService, serverless" in row
    assert "2048 MB, up to 5 at once" in row
    assert "$0/h idle; $0.0000400 per second of each request" in row


def stack_home(aws_env):
    from pathlib import Path

    return Path(aws_env["DEEPCLOUD_HOME"])


def test_async_deploy_sends_requests_through_s3_and_predict_reads_the_results(
    moded, moto_server, ops_aws, aws_env
) -> None:
    stack = moded("async", quota_calls=1)
    name = f"deepcloud-{stack.name}-async"
    queue_results(moto_server, ["0"] * invoke.SMOKE_REQUESTS, "async")
    code, out, err = ops_aws("deploy", "--model", RUN)
    assert code == 0, err
    assert "a rollout of up to 4 needs 8" in out, "blue/green: two fleets, as for real-time"
    assert "through S3)" in out
    requests = client("s3").list_objects_v2(Bucket=stack.artifacts_bucket, Prefix="async/input/")["Contents"]
    assert len(requests) == invoke.SMOKE_REQUESTS, "each request is stored under async/input/ for SageMaker to read"
    body = client("s3").get_object(Bucket=stack.artifacts_bucket, Key=requests[0]["Key"])["Body"].read()
    assert json.loads(body)["instances"][0] == [[[0] * 8] * 8], "a zero image of the input shape [1, 8, 8]"
    write_test_set(stack_home(aws_env), ["1", "2", "3"])
    queue_results(moto_server, ["1", "2", "0"], "async")
    code, out, err = ops_aws("predict")
    assert code == 0, err
    assert "accuracy over HTTP   0.6667  (2/3)" in out
    code, out, err = ops_aws("status")
    row = next(line for line in out.splitlines() if line.startswith("endpoint") and name in line)
    assert "InService, async (scales to zero)" in row


def test_an_async_result_is_waited_for_and_a_failure_is_one_line(stack, tmp_path) -> None:
    """An endpoint at zero instances answers later: GetObject says NoSuchKey until the result is there."""
    from tests.ops.conftest import stubbed

    stack.standins.update(
        outputs={
            **stack.outputs,
            "endpoint_mode": "async",
            "async_prefix": f"s3://{stack.artifacts_bucket}/async/",
            "endpoint_name": "e-async",
        }
    )
    runtime, rt = stubbed("sagemaker-runtime")
    s3, s3_stub = stubbed("s3")
    key = "async/input/r-1.json"
    s3_stub.add_response(
        "put_object",
        {},
        {"Bucket": stack.artifacts_bucket, "Key": key, "Body": b"{}", "ContentType": "application/json"},
    )
    rt.add_response(
        "invoke_endpoint_async",
        {
            "InferenceId": "r-1",
            "OutputLocation": "s3://b/out/r-1.out",
            "FailureLocation": "s3://b/failures/r-1-error.out",
        },
        {
            "EndpointName": "e-async",
            "ContentType": "application/json",
            "Accept": "application/json",
            "InputLocation": f"s3://{stack.artifacts_bucket}/{key}",
            "InferenceId": "r-1",
        },
    )
    for _ in range(2):  # neither written yet
        s3_stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
        s3_stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    s3_stub.add_response(
        "get_object", {"Body": io.BytesIO(b'{"predictions": [{"label": "7"}]}')}, {"Bucket": "b", "Key": "out/r-1.out"}
    )
    ctx = stack.context(tmp_path, {"sagemaker-runtime": runtime, "s3": s3})
    assert json.loads(invoke.invoke(ctx, "e-async", b"{}", "r-1"))["predictions"][0]["label"] == "7"
    s3_stub.assert_no_pending_responses()
    # a failure: SageMaker wrote the failure location instead
    s3_stub.add_response(
        "put_object",
        {},
        {"Bucket": stack.artifacts_bucket, "Key": key, "Body": b"{}", "ContentType": "application/json"},
    )
    rt.add_response(
        "invoke_endpoint_async",
        {"OutputLocation": "s3://b/out/r-1.out", "FailureLocation": "s3://b/failures/r-1-error.out"},
    )
    s3_stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    s3_stub.add_response(
        "get_object",
        {"Body": io.BytesIO(b"ModelError: shape mismatch")},
        {"Bucket": "b", "Key": "failures/r-1-error.out"},
    )
    with pytest.raises(OpsError) as error:
        invoke.invoke(ctx, "e-async", b"{}", "r-1")
    assert str(error.value) == (
        "async request r-1 to e-async failed: ModelError: shape mismatch (s3://b/failures/r-1-error.out)"
    )


def test_predict_without_an_endpoint_is_one_line(stack, ops_aws) -> None:
    code, _, err = ops_aws("predict")
    one_line_error(code, err, "no endpoint is deployed: run `make deploy TARGET=aws` first")
