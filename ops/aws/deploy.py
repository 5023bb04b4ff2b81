"""`make deploy TARGET=aws` and `make rollback TARGET=aws`: a model run behind the stack's SageMaker endpoint.

deploy: push the serving image (skipped when unchanged), set ``deepcloud:modelArtifact`` to the chosen run's
``models/<run-id>/model.tar.gz`` (the newest by default) and ``deepcloud:servingImageTag`` to the image, run
``pulumi up`` (gated by the policy pack), and meanwhile follow the endpoint: its status, and its CloudWatch logs while
it is Creating or Updating. Success is decided here, not by `pulumi up`: the provider waits for the next InService,
which a rolled-back endpoint also reports, so DescribeEndpoint must name the endpoint configuration `pulumi up`
applied, report no failure, and serve that model and image. A failed endpoint prints its failure reason and the first
traceback in its logs, and the config is put back to what it was (the endpoint keeps serving the old model:
SageMaker's blue/green rollout never shifted traffic to the failed one). Either way, once the endpoint is InService,
the models and configurations it no longer uses, which infra/ retains on replacement, are deleted
(ops/aws/superseded.py). A healthy one gets a smoke request through sagemaker-runtime and its latency is printed: a
real-time or serverless endpoint `InvokeEndpoint`; an async one `InvokeEndpointAsync` on a request put under
async/input/ of the artifacts bucket, then the result read from the OutputLocation SageMaker answered with (or the
failure from FailureLocation), waiting while a scaled-to-zero endpoint brings an instance up.

Every deploy and rollback is appended to ``s3://<artifacts>/deploys/history.json``; rollback deploys the
newest successful entry that serves something else than the current one.

A multi-model endpoint (deepcloud:endpointMode multi-model) is deployed to by a copy under its S3 prefix instead, with
no `pulumi up` and no rollback (every model copied there stays invokable by its TargetModel): ops/aws/multi_model.py.
"""

from __future__ import annotations

import json
import re
import statistics
import tarfile
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.engine import STACK_TAG
from ops.aws import images, runs, superseded
from ops.aws.clients import describe, error_code
from ops.aws.console import Phases, header, say
from ops.aws.context import Context
from ops.aws.logs import GroupTail, first_traceback
from ops.aws.preflight import check_endpoint_quota
from ops.aws.stack import CONFIG
from ops.errors import OpsError

HISTORY_KEY = "deploys/history.json"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints/{name}"
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")
FAILED = ("Failed", "UpdateRollbackFailed", "OutOfService")
SMOKE_REQUESTS = 5
ASYNC_WAIT_S = 1200
"""How long to wait for an async result: an endpoint at zero instances first launches one (the HasBacklogWithoutCapacity
alarm needs two one-minute periods, then the instance boots and loads the model), so minutes, not seconds."""
WAIT_LIMIT_S = 3600
"""How long to wait for the endpoint after `pulumi up` returned (blue/green bake time included)."""
_GPU_ENDPOINT = re.compile(r"ml\.(g|p)\d")


def torch_index(endpoint_instance_type: str | None) -> str:
    """The serving image's TORCH_INDEX build argument: CUDA wheels for a GPU endpoint, CPU ones otherwise."""
    return "cu126" if endpoint_instance_type and _GPU_ENDPOINT.match(endpoint_instance_type) else "cpu"


def read_history(s3: Any, bucket: str) -> list[dict]:
    history = runs.read_json(s3, bucket, HISTORY_KEY)
    return history if isinstance(history, list) else []


def append_history(s3: Any, bucket: str, entry: dict) -> None:
    history = read_history(s3, bucket)
    history.append(entry)
    s3.put_object(
        Bucket=bucket,
        Key=HISTORY_KEY,
        ContentType="application/json",
        Body=(json.dumps(history, indent=2) + "\n").encode(),
    )


def chosen_run(ctx: Context, run_id: str | None = None) -> tuple[str, dict[str, str]]:
    """The run `make deploy` deploys (MODEL=, else the newest model), checked to have a model; and the stack's config,
    which says whether the endpoint is multi-model (multi_model.py deploys there; ops/aws/cli.py chooses)."""
    out = ctx.outputs
    s3 = ctx.aws.client("s3")
    run_id = run_id or runs.latest_model(s3, out.artifacts_bucket)
    runs.require_model(s3, out.artifacts_bucket, run_id)
    header(f"deploy (aws): run {run_id} to stack {ctx.stack.name}")
    return run_id, ctx.pulumi.config()


def deploy(ctx: Context, run_id: str, config: dict[str, str]) -> dict:
    """Roll ``run_id`` out to the realtime, serverless or async endpoint: the serving image, then `pulumi up`."""
    out = ctx.outputs
    check_endpoint_quota(ctx)
    kind = out.endpoint_instance_type or config.get(CONFIG.endpoint_instance_type)
    image = images.ensure(
        ctx.aws, ctx.repo, images.IMAGES["serving"], out.serving_repository_url, {"TORCH_INDEX": torch_index(kind)}
    )
    return _roll_out(ctx, run_id, image.tag, "deploy", config)


def rollback(ctx: Context) -> dict:
    if ctx.outputs.endpoint_mode == "multi-model":
        raise OpsError(
            f"endpoint {ctx.outputs.endpoint_name} is multi-model: there is nothing to roll back, every run "
            "deployed to it stays invokable (`make predict TARGET=aws MODEL=<run-id>`)"
        )
    s3 = ctx.aws.client("s3")
    history = [e for e in read_history(s3, ctx.outputs.artifacts_bucket) if e.get("result") == "InService"]
    if not history:
        raise OpsError("nothing to roll back to: no successful deploy in the history; run `make deploy TARGET=aws`")
    current = (history[-1]["model_artifact"], history[-1]["serving_image_tag"])
    previous = next((e for e in reversed(history) if (e["model_artifact"], e["serving_image_tag"]) != current), None)
    if previous is None:
        raise OpsError(f"nothing to roll back to: every deploy in the history served {current[0]}")
    header(f"rollback (aws): back to run {previous['run_id']} (deployed {previous['at']})")
    runs.require_model(s3, ctx.outputs.artifacts_bucket, previous["run_id"])
    check_endpoint_quota(ctx)
    return _roll_out(ctx, previous["run_id"], previous["serving_image_tag"], "rollback", ctx.pulumi.config())


def _roll_out(ctx: Context, run_id: str, image_tag: str, kind: str, config: dict[str, str]) -> dict:
    s3 = ctx.aws.client("s3")
    bucket = ctx.outputs.artifacts_bucket
    model_artifact = runs.model_key(run_id)
    before = {
        CONFIG.model_artifact: config.get(CONFIG.model_artifact),
        CONFIG.serving_image_tag: config.get(CONFIG.serving_image_tag),
    }
    after = {CONFIG.model_artifact: model_artifact, CONFIG.serving_image_tag: image_tag}
    for key, value in after.items():
        say(f"config       {key} = {value}" + (f" (was {before[key]})" if before[key] != value else " (unchanged)"))
        ctx.pulumi.set_config(key, value)
    entry: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "run_id": run_id,
        "model_artifact": model_artifact,
        "serving_image_tag": image_tag,
        "previous": {
            "model_artifact": before[CONFIG.model_artifact],
            "serving_image_tag": before[CONFIG.serving_image_tag],
        },
    }
    watcher = EndpointWatcher(ctx, ctx.outputs.endpoint_name)
    try:
        try:
            ctx.pulumi.up(on_line=lambda line: say(f"  {line}"), poll=watcher.poll, poll_seconds=max(ctx.poll_s, 1.0))
            ctx.stack = ctx.stack.reload()
            if not ctx.outputs.endpoint_name:
                raise OpsError("pulumi up finished but the stack has no endpoint_name output: check infra/")
            watcher.name = ctx.outputs.endpoint_name
            watcher.wait_in_service()
            watcher.check_serves(model_artifact, image_tag, ctx.outputs.endpoint_config_name)
        except (OpsError, ClientError, BotoCoreError) as exc:
            if isinstance(exc, OpsError):
                watcher.settle()
            reason = watcher.failure() or (str(exc) if isinstance(exc, OpsError) else describe(exc))
            _restore(ctx, before)
            entry.update(result="Failed", endpoint=watcher.name, reason=reason)
            append_history(s3, bucket, entry)
            if watcher.status == "InService" and watcher.name:
                _prune(ctx, watcher.name)  # never the configuration it was rolled back onto
            raise OpsError(
                f"{kind} of run {run_id} failed: {reason}; config put back to "
                f"{before[CONFIG.model_artifact] or 'no model'}"
            ) from None
    finally:
        watcher.close()
    _prune(ctx, watcher.name)
    entry.update(result="InService", endpoint=watcher.name)
    entry["smoke"] = smoke(ctx, watcher.name, run_id)
    append_history(s3, bucket, entry)
    say(f"history      s3://{bucket}/{HISTORY_KEY} ({kind} recorded; `make rollback TARGET=aws` goes back)")
    return entry


def _prune(ctx: Context, endpoint: str) -> None:
    """Delete what the endpoint no longer uses; a failure to is a warning: the rollout stands, they cost nothing, and
    the next deploy or `make destroy` tries again."""
    try:
        superseded.prune(ctx, endpoint)
    except (OpsError, ClientError, BotoCoreError) as exc:
        why = str(exc) if isinstance(exc, OpsError) else describe(exc)
        say(f"warning      superseded models and configurations kept: {why}")


def _restore(ctx: Context, before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            ctx.pulumi.remove_config(key)
        else:
            ctx.pulumi.set_config(key, value)


class EndpointWatcher:
    """Status changes of the endpoint and its CloudWatch logs while it is busy; the failure reason and first
    traceback when it fails."""

    def __init__(self, ctx: Context, name: str | None) -> None:
        self.ctx = ctx
        self.name = name
        self.sagemaker = ctx.aws.client("sagemaker")
        self.since_ms = int(datetime.now(UTC).timestamp() * 1000)
        self.status = ""
        self.reason = ""
        self.tail: GroupTail | None = None
        self.phases = Phases("endpoint", clock=ctx.clock)

    def close(self) -> None:
        self.phases.close()

    def poll(self) -> str:
        if not self.name:
            self.name = self._discover()
        if not self.name:
            return ""
        try:
            endpoint = self.sagemaker.describe_endpoint(EndpointName=self.name)
        except ClientError as exc:
            if error_code(exc) == "ValidationException":  # "Could not find endpoint": not created yet
                return ""
            raise
        self.status = endpoint.get("EndpointStatus", "")
        self.reason = endpoint.get("FailureReason", "")
        self.phases.enter(f"endpoint {self.name} {self.status}", self.reason)
        if self.status in BUSY or self.status in FAILED:
            if self.tail is None:
                self.tail = GroupTail(
                    self.ctx.aws.client("logs"), ENDPOINT_LOG_GROUP.format(name=self.name), self.since_ms
                )
            for line in self.tail.poll():
                say(f"  | {line}")
        return self.status

    def _discover(self) -> str | None:
        """The first deploy: the stack exports endpoint_name only once the endpoint exists, so while `pulumi up`
        creates it, find it by the stack's tag (SageMaker endpoint names are case-insensitive; ARNs lower-case)."""
        tagging = self.ctx.aws.client("resourcegroupstaggingapi")
        page = tagging.get_resources(
            TagFilters=[{"Key": STACK_TAG, "Values": [self.ctx.stack.tag]}],
            ResourceTypeFilters=["sagemaker:endpoint"],
        )
        arns = [m["ResourceARN"] for m in page.get("ResourceTagMappingList", []) if ":endpoint/" in m["ResourceARN"]]
        return arns[0].rsplit("/", 1)[1] if len(arns) == 1 else None

    def failure(self) -> str:
        """The endpoint's failure reason and the first traceback of its logs, the traceback printed whole."""
        if self.status not in FAILED:
            return ""
        traceback = first_traceback(self.tail.lines if self.tail else [])
        if traceback:
            say("first traceback in the endpoint's logs:")
            for line in traceback:
                say(f"  {line}")
        last = f"; {traceback[-1].strip()}" if traceback else ""
        return f"endpoint {self.name} is {self.status}: {self.reason or 'no reason given'}{last}"

    def wait_in_service(self) -> None:
        deadline = self.ctx.clock() + WAIT_LIMIT_S
        while self.poll() != "InService":
            if self.status in FAILED:
                raise OpsError(self.failure())
            if self.ctx.clock() > deadline:
                raise OpsError(f"endpoint {self.name} is still {self.status} after {WAIT_LIMIT_S} s")
            self.ctx.wait()

    def settle(self) -> None:
        """After a failed `pulumi up`: the rollout may carry on (the provider gave up waiting, or stopped at a status
        it does not wait through, RollingBack among them); wait until the endpoint is no longer busy."""
        self.poll()
        deadline = self.ctx.clock() + WAIT_LIMIT_S
        while self.status in BUSY and self.ctx.clock() <= deadline:
            self.ctx.wait()
            self.poll()

    def check_serves(self, model_artifact: str, image_tag: str, config_name: str | None) -> None:
        """The rollout went through only if DescribeEndpoint names the configuration `pulumi up` applied and reports
        no failure of the last update, and that configuration serves the model and image just deployed. The
        provider's own wait cannot tell: a rolled-back endpoint is InService too, on the old configuration, its
        FailureReason possibly empty (terraform-provider-aws #48997, #39099, PR #49020)."""
        endpoint = self.sagemaker.describe_endpoint(EndpointName=self.name)
        serving, reason = endpoint["EndpointConfigName"], endpoint.get("FailureReason", "")
        why = f" ({reason})" if reason else ""
        if config_name and serving.lower() != config_name.lower():
            raise OpsError(
                f"endpoint {self.name} is InService on configuration {serving}, not {config_name} that "
                f"pulumi up applied: the rollout was rolled back{why} (see its CloudWatch alarms)"
            )
        if reason:
            raise OpsError(f"endpoint {self.name} is InService but its last update failed: {reason}")
        variants = self.sagemaker.describe_endpoint_config(EndpointConfigName=serving)["ProductionVariants"]
        model = self.sagemaker.describe_model(ModelName=variants[0]["ModelName"])
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        data, image = container.get("ModelDataUrl", ""), container.get("Image", "")
        if not data.endswith(model_artifact) or not image.endswith(f":{image_tag}"):
            raise OpsError(
                f"endpoint {self.name} is InService but serves {data} with {image}, not {model_artifact} "
                f"with tag {image_tag}: the rollout was rolled back (see its CloudWatch alarms)"
            )
        say(f"endpoint     {self.name} InService, serving {data} (configuration {serving})")


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
    """input.shape from manifest.json inside the run's model.tar.gz, read as a stream until it turns up."""
    body = s3.get_object(Bucket=bucket, Key=runs.model_key(run_id))["Body"]
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./") == "manifest.json":
                    manifest = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    return [int(n) for n in manifest["input"]["shape"]]
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise OpsError(f"cannot read manifest.json from s3://{bucket}/{runs.model_key(run_id)}: {exc}") from None
    raise OpsError(f"s3://{bucket}/{runs.model_key(run_id)} has no manifest.json (docs/artifact.md)")


def _zeros(shape: list[int]) -> Any:
    return [_zeros(shape[1:]) for _ in range(shape[0])] if len(shape) > 1 else [0] * shape[0]
