"""`make destroy TARGET=aws`: stop what runs, `pulumi destroy`, then prove nothing billable is left.

0. With deepcloud:forceDestroy false (the default), a bucket or repository that holds data would stop `pulumi
   destroy` half-way (BucketNotEmpty, RepositoryNotEmpty): the access-log bucket always does once the others were
   used. Then nothing is stopped or deleted; one line names what holds data and the setting to change, and the
   audit below still shows what the stack has.
1. Stop the stack's running training: ECS tasks in its cluster, and SageMaker training jobs in progress that
   carry its tag; wait until the ECS tasks are stopped (a cluster with running tasks cannot be deleted).
2. ``pulumi destroy --exclude-protected``: everything but the protected data bucket and what it needs; then the
   SageMaker models and endpoint configurations the stack retains on replacement (ops/aws/superseded.py), now that
   no endpoint can use them.
3. Audit: every resource the Resource Groups Tagging API still finds with ``deepcloud:stack=<project>/<stack>``,
   checked one by one (the index lags behind deletions by minutes) and printed as a table in three groups:
   retained by design (what the stack's state still holds after that destroy: the protected data bucket, its
   settings and its KMS key), gone or not billed (a deleted bucket still indexed, a KMS key pending deletion, a
   stopped task, an inactive task definition), and left over. Anything left over exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infra.engine import STACK_TAG
from ops.aws import superseded
from ops.aws.clients import error_code
from ops.aws.console import header, say, table
from ops.aws.context import Context
from ops.aws.stack import CONFIG
from ops.errors import OpsError

STOP_WAIT_S = 300
"""How long to wait for stopped ECS tasks: the trainer has 120 s to checkpoint after SIGTERM."""


@dataclass(frozen=True, slots=True)
class Found:
    arn: str
    kind: str
    """`service:type`, e.g. s3:bucket, kms:key."""
    group: str
    """retained, gone or leftover."""
    note: str


def stop_running(ctx: Context) -> list[str]:
    """Stop the stack's ECS tasks and SageMaker training jobs; the ids of what was stopped."""
    stopped: list[str] = []
    ecs = ctx.aws.client("ecs")
    cluster = ctx.outputs.cluster_name
    try:
        arns = [
            arn
            for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="RUNNING")
            for arn in page.get("taskArns", [])
        ]
    except ClientError as exc:
        if error_code(exc) != "ClusterNotFoundException":
            raise
        arns = []
    for arn in arns:
        ecs.stop_task(cluster=cluster, task=arn, reason="make destroy")
        say(f"stopping ECS task {arn}")
        stopped.append(arn)
    sagemaker = ctx.aws.client("sagemaker")
    for page in sagemaker.get_paginator("list_training_jobs").paginate(StatusEquals="InProgress"):
        for job in page.get("TrainingJobSummaries", []):
            tags = sagemaker.list_tags(ResourceArn=job["TrainingJobArn"]).get("Tags", [])
            if {"Key": STACK_TAG, "Value": ctx.stack.tag} in tags:
                sagemaker.stop_training_job(TrainingJobName=job["TrainingJobName"])
                say(f"stopping SageMaker training job {job['TrainingJobName']}")
                stopped.append(job["TrainingJobArn"])
    _wait_stopped(ctx, [arn for arn in stopped if ":task/" in arn])
    return stopped


def _wait_stopped(ctx: Context, tasks: list[str]) -> None:
    deadline = ctx.clock() + STOP_WAIT_S
    ecs = ctx.aws.client("ecs")
    while tasks:
        described = ecs.describe_tasks(cluster=ctx.outputs.cluster_name, tasks=tasks).get("tasks", [])
        tasks = [t["taskArn"] for t in described if t.get("lastStatus") != "STOPPED"]
        if not tasks:
            break
        if ctx.clock() > deadline:
            raise OpsError(
                f"{len(tasks)} ECS task(s) still not stopped after {STOP_WAIT_S} s: run `make destroy TARGET=aws` again"
            )
        ctx.wait()


def audit(ctx: Context, retained: set[str] | None = None) -> list[Found]:
    """Everything still tagged with the stack, classified; ``retained``: ARNs the stack keeps on purpose."""
    tagging = ctx.aws.client("resourcegroupstaggingapi")
    found = []
    pages = tagging.get_paginator("get_resources").paginate(TagFilters=[{"Key": STACK_TAG, "Values": [ctx.stack.tag]}])
    for page in pages:
        for mapping in page.get("ResourceTagMappingList", []):
            found.append(_classify(ctx, mapping["ResourceARN"], retained or set()))
    return sorted(found, key=lambda f: (f.group, f.kind, f.arn))


def _kind(arn: str) -> str:
    service, resource = arn.split(":")[2], arn.split(":", 5)[5]
    if service == "s3":
        return "s3:bucket"
    return f"{service}:{resource.split('/', 1)[0].split(':', 1)[0]}"


def _bucket(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    bucket = name.split("/", 1)[0]
    if not _exists(lambda: ctx.aws.client("s3").head_bucket(Bucket=bucket)):
        return "gone", "deleted (the tagging index lags)"
    if bucket == ctx.outputs.data_bucket:
        return "retained", (
            f"the protected data bucket: to delete it, set {CONFIG.protect_data_bucket}=false, "
            "`pulumi up`, then `make destroy` again"
        )
    return "leftover", f"bucket {bucket} (storage is billed)"


def _key(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    state = ctx.aws.client("kms").describe_key(KeyId=arn)["KeyMetadata"]
    if state.get("KeyState") == "PendingDeletion":
        when = state.get("DeletionDate")
        return "gone", (
            f"pending deletion{f' on {when:%Y-%m-%d}' if when else ''} (not billed; cancel it if the "
            "retained data bucket must stay readable)"
        )
    return "leftover", f"key {state.get('KeyState', '?')} (billed monthly)"


def _task_definition(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    task_def = ctx.aws.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    if task_def.get("status") != "ACTIVE":
        return "gone", f"{task_def.get('status', '').lower()} (not billed)"
    return "leftover", "active task definition (not billed, but part of the stack)"


def _task(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    tasks = ctx.aws.client("ecs").describe_tasks(cluster=name.split("/")[1], tasks=[arn]).get("tasks", [])
    if not tasks or tasks[0].get("lastStatus") == "STOPPED":
        return "gone", "stopped task (not billed)"
    return "leftover", f"task {tasks[0].get('lastStatus', '?')} (its instance is billed)"


def _cluster(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    clusters = ctx.aws.client("ecs").describe_clusters(clusters=[arn]).get("clusters", [])
    if not clusters or clusters[0].get("status") == "INACTIVE":
        return "gone", "deleted cluster (not billed)"
    return "leftover", "active cluster (not billed itself, but part of the stack)"


def _training_job(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    job = ctx.aws.client("sagemaker").describe_training_job(TrainingJobName=name.split("/", 1)[1])
    if job.get("TrainingJobStatus") != "InProgress":
        return "gone", f"{job.get('TrainingJobStatus', '?').lower()} training job (not billed)"
    return "leftover", "training job in progress (billed)"


def _sagemaker(describe: str, argument: str, what: str) -> Any:
    """A check for a SageMaker resource kind: DescribeX(name) answers while it exists, "Could not find ..." (a
    ValidationException) once it is gone."""

    def check(ctx: Context, arn: str, name: str) -> tuple[str, str]:
        try:
            found = getattr(ctx.aws.client("sagemaker"), describe)(**{argument: name.split("/", 1)[1]})
        except ClientError as exc:
            if error_code(exc) != "ValidationException":
                raise
            return "gone", "deleted (the tagging index lags)"
        if found.get("EndpointStatus") == "Deleting":
            return "gone", "endpoint being deleted (billing stops)"
        return "leftover", what

    return check


def _log_group(ctx: Context, arn: str, name: str) -> tuple[str, str]:
    group = name.split(":", 1)[1] if ":" in name else name
    groups = ctx.aws.client("logs").describe_log_groups(logGroupNamePrefix=group).get("logGroups", [])
    if not any(g["logGroupName"] == group for g in groups):
        return "gone", "deleted (the tagging index lags)"
    return "leftover", "log group (stored logs are billed)"


CHECKS = {
    "s3:bucket": _bucket,
    "kms:key": _key,
    "ecs:task-definition": _task_definition,
    "ecs:task": _task,
    "ecs:cluster": _cluster,
    "sagemaker:training-job": _training_job,
    "logs:log-group": _log_group,
    "sagemaker:endpoint": _sagemaker("describe_endpoint", "EndpointName", "endpoint (its instances are billed)"),
    "sagemaker:endpoint-config": _sagemaker(
        "describe_endpoint_config", "EndpointConfigName", "endpoint configuration (not billed, but part of the stack)"
    ),
    "sagemaker:model": _sagemaker("describe_model", "ModelName", "model (not billed, but part of the stack)"),
}
"""How to tell, per kind of resource, whether what the tagging index lists is still there and billed."""
_GONE_CODES = ("NotFoundException", "ResourceNotFoundException", "ClientException", "404", "NoSuchBucket")


def _classify(ctx: Context, arn: str, retained: set[str]) -> Found:
    kind = _kind(arn)
    check = CHECKS.get(kind)
    group, note = "leftover", "still tagged with the stack"
    if check is not None:
        try:
            group, note = check(ctx, arn, arn.split(":", 5)[5])
        except ClientError as exc:
            if error_code(exc) not in _GONE_CODES:
                raise
            group, note = "gone", "deleted (the tagging index lags)"
    if group == "leftover" and arn in retained:
        group, note = "retained", f"{note}: kept by `pulumi destroy --exclude-protected` with the protected data bucket"
    return Found(arn, kind, group, note)


def _exists(call: Any) -> bool:
    try:
        call()
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


FORCE_DESTROY = "deepcloud:forceDestroy"
NOT_EMPTY = ("BucketNotEmpty", "RepositoryNotEmptyException")
"""S3 DeleteBucket: "All objects (including all object versions and delete markers) in the bucket must be deleted
before the bucket itself can be deleted"; ECR DeleteRepository: "If the repository isn't empty, you must either delete
the contents of the repository or use the force option" (botocore's models). The provider passes both on unless the
resource has force_destroy / force_delete, which deepcloud:forceDestroy sets."""
KEEP_FIRST = (
    "to delete them with the stack, copy out what you want to keep, then `pulumi config set "
    f"{FORCE_DESTROY} true`, `python -m infra.cli up`, and `make destroy TARGET=aws` again"
)


def _objects(s3: Any, bucket: str) -> int:
    """Object versions and delete markers in `bucket` (what S3 counts for BucketNotEmpty), up to 1000."""
    try:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=1000)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchBucket", "404"):
            return 0
        raise
    return len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))


def _images(ecr: Any, repository_url: str) -> int:
    try:
        return len(ecr.list_images(repositoryName=repository_url.split("/", 1)[1], maxResults=1000).get("imageIds", []))
    except ClientError as exc:
        if error_code(exc) == "RepositoryNotFoundException":
            return 0
        raise


def holding_data(ctx: Context) -> list[str]:
    """The buckets and repositories `pulumi destroy` would refuse to delete (BucketNotEmpty, RepositoryNotEmpty)
    because the stack was applied with forceDestroy off; [] when it is on, or unknown (an older stack)."""
    out = ctx.outputs
    if out.force_destroy is not False:
        return []
    s3, ecr = ctx.aws.client("s3"), ctx.aws.client("ecr")
    buckets = [("artifacts", out.artifacts_bucket), ("access logs", out.access_logs_bucket)]
    if out.protect_data_bucket is False:  # else `--exclude-protected` keeps it
        buckets.insert(0, ("data", out.data_bucket))
    held = []
    for what, bucket in buckets:
        count = _objects(s3, bucket) if bucket else 0
        if count:
            held.append(f"s3://{bucket} ({what}: {count}{'+' if count >= 1000 else ''} object versions)")
    for room, url in (("trainer", out.trainer_repository_url), ("serving", out.serving_repository_url)):
        count = _images(ecr, url)
        if count:
            held.append(f"{url} ({room}: {count} images)")
    return held


def _not_empty(failure: OpsError) -> OpsError:
    """pulumi destroy's BucketNotEmpty / RepositoryNotEmpty as one line that names the setting."""
    if not any(code in str(failure) for code in NOT_EMPTY):
        return failure
    return OpsError(
        f"{failure}: a bucket or repository still holds data and {FORCE_DESTROY} is false; {KEEP_FIRST} "
        "(that `up` also recreates what this destroy removed, for the next destroy to remove again)"
    )


def destroy(ctx: Context) -> list[Found]:
    header(f"destroy (aws): stack {ctx.stack.name} ({ctx.stack.tag}) in {ctx.outputs.region}")
    held = holding_data(ctx)
    failure = None
    if held:
        say("holding data " + "; ".join(held))
        failure = OpsError(
            f"destroy stopped before deleting anything: {', '.join(held)} hold data, and the stack has "
            f"{FORCE_DESTROY}=false, so `pulumi destroy` would fail on them (BucketNotEmpty, "
            f"RepositoryNotEmpty) half-way; {KEEP_FIRST}"
        )
    else:
        stopped = stop_running(ctx)
        say(f"stopped      {len(stopped)} running task(s)/job(s)" if stopped else "stopped      nothing was running")
        try:
            ctx.pulumi.stream(
                "destroy",
                "--yes",
                "--skip-preview",
                "--exclude-protected",
                what="pulumi destroy failed",
                on_line=lambda line: say(f"  {line}"),
            )
        except OpsError as exc:
            failure = _not_empty(exc)
    try:
        retained = ctx.pulumi.managed_arns()
    except OpsError as exc:
        say(f"warning      {exc}: only the data bucket counts as retained")
        retained = set()
    if failure is None:
        _delete_retained_models(ctx, retained)
    found = audit(ctx, retained)
    report(ctx, found)
    if failure is not None:
        raise failure
    leftover = [f for f in found if f.group == "leftover"]
    if leftover:
        raise OpsError(
            f"{len(leftover)} resource(s) tagged {STACK_TAG}={ctx.stack.tag} are left (table above): "
            "run `make destroy TARGET=aws` again in a few minutes (the tagging index lags), "
            "else delete them by hand"
        )
    return found


def _delete_retained_models(ctx: Context, managed: set[str]) -> None:
    """The endpoint's models and configurations are retained on delete (infra/components/inference_endpoint.py), so
    `pulumi destroy` leaves them: delete them once the endpoint that could use them is gone."""
    name = ctx.outputs.endpoint_name
    if name:
        try:
            status = ctx.aws.client("sagemaker").describe_endpoint(EndpointName=name).get("EndpointStatus")
        except ClientError as exc:
            if error_code(exc) != "ValidationException":  # "Could not find endpoint": it is gone
                raise
            status = None
        if status not in (None, "Deleting"):
            say(f"kept         SageMaker models and configurations: endpoint {name} is still {status}")
            return
    superseded.delete(ctx, superseded.unused(ctx, None, managed))


def report(ctx: Context, found: list[Found]) -> None:
    say(f"audit        Resource Groups Tagging API, {STACK_TAG}={ctx.stack.tag}, {ctx.outputs.region}")
    titles = {
        "leftover": "left over (billable or still part of the stack)",
        "retained": "retained by design",
        "gone": "gone or not billed",
    }
    for group in ("leftover", "retained", "gone"):
        rows = [(f.kind, f.arn, f.note) for f in found if f.group == group]
        if rows:
            say(f"{titles[group]}:")
            for line in table(("kind", "resource", "note"), rows):
                say(f"  {line}")
    if not any(f.group == "leftover" for f in found):
        say("nothing billable is left")
