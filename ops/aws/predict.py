"""`make predict TARGET=aws`: the held-out test images through the stack's endpoint, whatever its mode.

Each image is one request, sent as `make deploy`'s smoke request is (ops/aws/invoke.py): InvokeEndpoint for
a real-time or serverless endpoint, InvokeEndpointAsync and the result from S3 for an async one, InvokeEndpoint with
TargetModel "<run-id>.tar.gz" for a multi-model one, whose run MODEL= names (ops/aws/multi_model.py). The report is the
local target's (accuracy, latency percentiles, throughput) next to the accuracy the trainer measured in-process on the
same images, read from the deployed model's manifest.json.
"""

from __future__ import annotations

import json
import time

from ops.aws import deploy, invoke, multi_model, runs
from ops.aws.console import header, say
from ops.aws.context import Context
from ops.errors import OpsError
from ops.predict import PredictReport, read_test_set


def deployed_run(ctx: Context) -> str:
    """The run the endpoint serves: the newest successful deploy in the history."""
    if not ctx.outputs.endpoint_name:
        raise OpsError("no endpoint is deployed: run `make deploy TARGET=aws` first")
    served = [
        e
        for e in deploy.read_history(ctx.aws.client("s3"), ctx.outputs.artifacts_bucket)
        if e.get("result") == "InService"
    ]
    if not served:
        raise OpsError("no successful deploy in the history: run `make deploy TARGET=aws` first")
    return served[-1]["run_id"]


def predict(ctx: Context, model: str | None = None) -> PredictReport:
    endpoint = ctx.outputs.endpoint_name or ""
    target = None
    if endpoint and ctx.outputs.endpoint_mode == multi_model.MODE:
        run_id = multi_model.predicted_run(ctx, model)
        target = multi_model.target_model(run_id)
    else:
        run_id = deployed_run(ctx)
    channel = ctx.paths.dataset / "test"
    images, labels = read_test_set(channel)
    mode = ctx.outputs.endpoint_mode or "realtime"
    header(f"predict (aws, {mode}): {channel} -> endpoint {endpoint} (run {run_id})")
    manifest = runs.read_manifest(ctx.aws.client("s3"), ctx.outputs.artifacts_bucket, run_id)
    in_process = manifest.get("metrics", {}).get("test", {}).get("accuracy")
    latencies, correct = [], 0
    started = time.perf_counter()
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        body = json.dumps({"instances": [image.tolist()]}).encode()
        t0 = time.perf_counter()
        answer = invoke.invoke(ctx, endpoint, body, f"predict-{run_id}-{n}", target)
        latencies.append((time.perf_counter() - t0) * 1000)
        try:
            correct += json.loads(answer)["predictions"][0]["label"] == label
        except (ValueError, KeyError, IndexError, TypeError):
            raise OpsError(f"endpoint {endpoint} did not answer with predictions: {answer[:200]!r}") from None
    report = PredictReport(
        samples=len(labels),
        correct=correct,
        in_process_accuracy=in_process,
        latencies_ms=latencies,
        seconds=time.perf_counter() - started,
    )
    for line in report.lines():
        say(line)
    if in_process is not None and not report.matches:
        raise OpsError(
            "accuracy through the endpoint differs from the in-process accuracy of the same artifact: "
            "the server and trainer disagree on the model's input; see docs/artifact.md"
        )
    return report
