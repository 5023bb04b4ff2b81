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
(ops/aws/superseded.py). A healthy one gets a smoke request (ops/aws/invoke.py) and its latency is printed: a
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
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.engine import STACK_TAG
from ops.aws import images, invoke, runs, superseded
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
    entry["smoke"] = invoke.smoke(ctx, watcher.name, run_id)
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
