"""One request to the stack's endpoint in its mode (`make predict TARGET=aws` sends each test image so), and the smoke
test `make deploy TARGET=aws` runs once the endpoint is InService: SMOKE_REQUESTS zero images of the model's input
shape, their answer and latency."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from botocore.exceptions import ClientError

from ops.aws import runs
from ops.aws.clients import error_code
from ops.aws.console import say
from ops.aws.context import Context
from ops.errors import OpsError

SMOKE_REQUESTS = 5
ASYNC_WAIT_S = 1200
"""How long to wait for an async result: an endpoint at zero instances first launches one (the HasBacklogWithoutCapacity
alarm needs two one-minute periods, then the instance boots and loads the model), so minutes, not seconds."""


def invoke(ctx: Context, endpoint: str, body: bytes, request_id: str, target_model: str | None = None) -> bytes:
    """One request to the endpoint of the stack's mode; the response body. Real-time, serverless and multi-model
    endpoints answer InvokeEndpoint (a multi-model one for the model ``target_model`` names: S19); an async one takes
    InvokeEndpointAsync on a request stored in S3 and writes the result (or the failure) to S3 later (S16)."""
    runtime = ctx.aws.client("sagemaker-runtime")
    if ctx.outputs.endpoint_mode != "async":
        target = {"TargetModel": target_model} if target_model else {}
        response = runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType="application/json", Accept="application/json", Body=body, **target
        )
        return response["Body"].read()
    return _invoke_async(ctx, endpoint, body, request_id)


def s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _invoke_async(ctx: Context, endpoint: str, body: bytes, request_id: str) -> bytes:
    prefix = ctx.outputs.async_prefix
    if not prefix:
        raise OpsError(
            "the stack exports no async_prefix for its async endpoint: run `pulumi up` with the current infra/ program"
        )
    s3 = ctx.aws.client("s3")
    bucket, key = s3_uri(f"{prefix}input/{request_id}.json")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    answer = ctx.aws.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint,
        ContentType="application/json",
        Accept="application/json",
        InputLocation=f"s3://{bucket}/{key}",
        InferenceId=request_id,
    )
    output, failure = answer["OutputLocation"], answer.get("FailureLocation")
    deadline = ctx.clock() + ASYNC_WAIT_S
    while True:
        for uri, failed in ((output, False), (failure, True)):
            if not uri:
                continue
            found_bucket, found_key = s3_uri(uri)
            try:
                data = s3.get_object(Bucket=found_bucket, Key=found_key)["Body"].read()
            except ClientError as exc:
                if error_code(exc) not in ("NoSuchKey", "404"):
                    raise
                continue
            if failed:
                raise OpsError(
                    f"async request {request_id} to {endpoint} failed: {data[:300].decode(errors='replace')} ({uri})"
                )
            return data
        if ctx.clock() > deadline:
            raise OpsError(
                f"no result for async request {request_id} after {ASYNC_WAIT_S} s at {output}: "
                "`make status TARGET=aws` shows the endpoint's instances, `make logs TARGET=aws ENDPOINT=1` "
                "its log"
            )
        ctx.wait()


def smoke(ctx: Context, endpoint: str, run_id: str, target_model: str | None = None) -> dict:
    """Send one zero image of the model's input shape SMOKE_REQUESTS times (to ``target_model`` of a multi-model
    endpoint); print the answer and latency."""
    shape = input_shape(ctx.aws.client("s3"), ctx.outputs.artifacts_bucket, run_id)
    body = json.dumps({"instances": [_zeros(shape)]}).encode()
    latencies, answer = [], b""
    for n in range(SMOKE_REQUESTS):
        start = time.perf_counter()
        answer = invoke(ctx, endpoint, body, f"smoke-{run_id}-{n}", target_model)
        latencies.append((time.perf_counter() - start) * 1000)
    try:
        prediction = json.loads(answer)["predictions"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise OpsError(f"the smoke request to {endpoint} did not get predictions back: {answer[:200]!r}") from None
    p50 = statistics.median(latencies)
    say(
        f"smoke        {SMOKE_REQUESTS} requests of shape {shape}: label {prediction.get('label')!r}; "
        f"latency first {latencies[0]:.0f} ms, median {p50:.0f} ms, max {max(latencies):.0f} ms (round trip from here"
        + (", through S3)" if ctx.outputs.endpoint_mode == "async" else ")")
    )
    return {"label": prediction.get("label"), "first_ms": round(latencies[0], 1), "median_ms": round(p50, 1)}


def input_shape(s3: Any, bucket: str, run_id: str) -> list[int]:
    """input.shape from manifest.json inside the run's model.tar.gz."""
    manifest = runs.read_manifest(s3, bucket, run_id)
    try:
        return [int(n) for n in manifest["input"]["shape"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise OpsError(f"s3://{bucket}/{runs.model_key(run_id)}: manifest.json has no input.shape ({exc})") from None


def _zeros(shape: list[int]) -> Any:
    return [_zeros(shape[1:]) for _ in range(shape[0])] if len(shape) > 1 else [0] * shape[0]
