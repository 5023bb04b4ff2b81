"""`make deploy` and `make predict` TARGET=aws on a multi-model endpoint (deepcloud:endpointMode multi-model).

Such an endpoint serves every archive under its S3 prefix (stack output ``models_prefix``, s3://<artifacts>/multi-model/
models/): SageMaker downloads and loads one on the first request that names it as ``TargetModel`` (its key relative to
the prefix), and adding one needs no change to the endpoint (docs/aws-behaviours.md S19). So a deploy is a copy, not a
rollout: the run's models/<run-id>/model.tar.gz is copied inside the artifacts bucket to <prefix><run-id>.tar.gz (S3
CopyObject, server-side; the bucket's default encryption applies to the copy), then smoke-tested with TargetModel
"<run-id>.tar.gz". No `pulumi up` runs, the serving image stays as it is, and every model copied before stays
invokable. Only while the endpoint does not exist yet (the mode was just set) does deploy push the serving image and run
`pulumi up` once to create it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ops.aws import deploy, images, invoke, runs
from ops.aws.clients import error_code
from ops.aws.console import say
from ops.aws.context import Context
from ops.aws.preflight import check_endpoint_quota
from ops.aws.stack import CONFIG
from ops.errors import OpsError

MODE = "multi-model"


def target_model(run_id: str) -> str:
    """The TargetModel of a run on a multi-model endpoint: its archive's key relative to the prefix."""
    return f"{run_id}.tar.gz"


def is_multi_model(ctx: Context, config: dict[str, str]) -> bool:
    """The mode the next `pulumi up` applies (the config), else the one applied (the outputs)."""
    return (config.get(CONFIG.endpoint_mode) or ctx.outputs.endpoint_mode) == MODE


def _location(ctx: Context, run_id: str) -> tuple[str, str]:
    """(bucket, key) of the run's archive under the endpoint's prefix."""
    prefix = ctx.outputs.models_prefix
    if not prefix:
        raise OpsError(
            "the stack exports no models_prefix for its multi-model endpoint: run `pulumi up` with the "
            "current infra/ program"
        )
    bucket, key = invoke.s3_uri(prefix)
    return bucket, f"{key}{target_model(run_id)}"


def deploy_run(ctx: Context, run_id: str, config: dict[str, str]) -> dict:
    out = ctx.outputs
    if out.endpoint_mode != MODE or not out.endpoint_name:
        _create_endpoint(ctx, config)
        config = ctx.pulumi.config()
    s3 = ctx.aws.client("s3")
    bucket, key = _location(ctx, run_id)
    source = runs.model_key(run_id)
    # boto3's managed copy: CopyObject (server-side) up to S3's 5 GB single-copy limit, UploadPartCopy parts above it.
    s3.copy({"Bucket": out.artifacts_bucket, "Key": source}, bucket, key)
    say(f"copied       s3://{out.artifacts_bucket}/{source} -> s3://{bucket}/{key} (server-side; no pulumi up)")
    endpoint = ctx.outputs.endpoint_name or ""
    entry: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": "deploy",
        "mode": MODE,
        "run_id": run_id,
        "model_artifact": key,
        "serving_image_tag": config.get(CONFIG.serving_image_tag),
        "endpoint": endpoint,
    }
    try:
        entry["smoke"] = invoke.smoke(ctx, endpoint, run_id, target_model=target_model(run_id))
    except (OpsError, ClientError) as exc:
        entry.update(result="Failed", reason=str(exc))
        deploy.append_history(s3, out.artifacts_bucket, entry)
        raise OpsError(f"run {run_id} is copied to s3://{bucket}/{key} but its smoke request failed: {exc}") from None
    entry["result"] = "InService"
    deploy.append_history(s3, out.artifacts_bucket, entry)
    say(
        f"invoke       make predict TARGET=aws MODEL={run_id}, or sagemaker-runtime InvokeEndpoint(EndpointName="
        f"{endpoint}, TargetModel={target_model(run_id)}); earlier copies under s3://{bucket}/"
        f"{key.rsplit('/', 1)[0]}/ stay invokable"
    )
    return entry


def _create_endpoint(ctx: Context, config: dict[str, str]) -> None:
    """The first deploy after the mode was set: the serving image pushed, `pulumi up` (gated by the policy pack)
    creating the endpoint, and the wait until it is InService."""
    say("endpoint     no multi-model endpoint yet: pushing the serving image and running `pulumi up` once to create it")
    check_endpoint_quota(ctx)
    out = ctx.outputs
    kind = out.endpoint_instance_type or config.get(CONFIG.endpoint_instance_type)
    image = images.ensure(
        ctx.aws,
        ctx.repo,
        images.IMAGES["serving"],
        out.serving_repository_url,
        {"TORCH_INDEX": deploy.torch_index(kind)},
    )
    ctx.pulumi.set_config(CONFIG.serving_image_tag, image.tag)
    watcher = deploy.EndpointWatcher(ctx, None)
    try:
        ctx.pulumi.up(on_line=lambda line: say(f"  {line}"), poll=watcher.poll, poll_seconds=max(ctx.poll_s, 1.0))
        ctx.stack = ctx.stack.reload()
        if ctx.outputs.endpoint_mode != MODE or not ctx.outputs.endpoint_name:
            raise OpsError("pulumi up finished but the stack has no multi-model endpoint_name output: check infra/")
        watcher.name = ctx.outputs.endpoint_name
        watcher.wait_in_service()
    finally:
        watcher.close()
    say(f"endpoint     {watcher.name} InService, serving the models under {ctx.outputs.models_prefix}")


def predicted_run(ctx: Context, model: str | None) -> str:
    """The run `make predict` targets on a multi-model endpoint: MODEL=, which must have been deployed (copied)."""
    endpoint = ctx.outputs.endpoint_name
    if not model:
        raise OpsError(
            f"endpoint {endpoint} is multi-model: give MODEL=<run-id>, the deployed run to send the images "
            "to (`make deploy TARGET=aws MODEL=<run-id>` deploys one)"
        )
    bucket, key = _location(ctx, model)
    try:
        ctx.aws.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            raise OpsError(
                f"run {model} is not on multi-model endpoint {endpoint} (no s3://{bucket}/{key}): run "
                f"`make deploy TARGET=aws MODEL={model}` first"
            ) from None
        raise
    return model
