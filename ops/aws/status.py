"""`make status TARGET=aws`: what runs in the stack and what it costs per hour; `make logs TARGET=aws`: a
run's log (the newest by default) or the endpoint's.

Costs are instance types x count x the hourly price from ops/aws/prices.toml (on-demand list prices with
their date and source; spot costs less).
"""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError

from infra.engine import STACK_TAG
from ops.aws import capacity, deploy, runs
from ops.aws.clients import error_code
from ops.aws.console import header, say, table
from ops.aws.context import Context
from ops.aws.logs import GroupTail, StreamTail
from ops.aws.prices import usd
from ops.aws.stack import CONFIG
from ops.errors import OpsError

RECENT_RUNS = 5


class _Rows:
    """The status table's rows, and the hourly total of those with a price."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.total = 0.0

    def append(self, row: tuple[str, str, str, str, str]) -> None:
        self.rows.append(row)

    def add(self, what: str, name: str, state: str, instance_type: str, count: int, kind: str) -> None:
        """A row priced by the table: ``count`` x ``instance_type`` in section ``kind``."""
        price = self.ctx.prices.find(kind, instance_type)
        hourly = price.usd_per_hour * count if price else None
        self.total += hourly or 0.0
        cost = usd(hourly) + "/h" if hourly is not None else "no price in table"
        self.rows.append((what, name, state, f"{count} x {instance_type}", cost))


def status(ctx: Context) -> float:
    """Print the stack's running things and their hourly cost; the total USD per hour."""
    out = ctx.outputs
    header(f"status (aws): stack {ctx.stack.name} ({ctx.stack.tag}), {out.region}")
    rows = _Rows(ctx)
    gpu = capacity.describe(ctx.aws, out.capacity_provider_name)
    for instance in gpu.instances:
        rows.add("GPU instance", instance.instance_id, instance.state, instance.instance_type, 1, "ec2")
    for task in _ecs_tasks(ctx):
        started = task.get("startedAt") or task.get("createdAt")
        age = f", {_age(started)}" if isinstance(started, datetime) else ""
        name = task.get("startedBy") or task["taskArn"].rsplit("/", 1)[-1]
        rows.append(("ECS task", name, f"{task.get('lastStatus', '?')}{age}", "on the GPU instances above", "-"))
    _training_job_rows(ctx, rows)
    _endpoint_rows(ctx, rows)
    for line in (
        table(("what", "name", "state", "instances", "cost"), rows.rows) if rows.rows else ["nothing is running"]
    ):
        say(line)
    say(f"total        {usd(rows.total)}/h  ({ctx.prices.note(out.region)}; spot costs less)")
    if out.endpoint_name and (model := ctx.pulumi.config().get(CONFIG.model_artifact)):
        say(f"deployed     s3://{out.artifacts_bucket}/{model}")
    _recent_runs(ctx)
    return rows.total


def _training_job_rows(ctx: Context, rows: _Rows) -> None:
    """The stack's SageMaker training jobs in progress (by its tag), priced per instance."""
    sagemaker = ctx.aws.client("sagemaker")
    for page in sagemaker.get_paginator("list_training_jobs").paginate(StatusEquals="InProgress"):
        for summary in page.get("TrainingJobSummaries", []):
            tags = sagemaker.list_tags(ResourceArn=summary["TrainingJobArn"]).get("Tags", [])
            if {"Key": STACK_TAG, "Value": ctx.stack.tag} not in tags:
                continue
            job = sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
            resources = job.get("ResourceConfig", {})
            rows.add(
                "training job",
                summary["TrainingJobName"],
                job.get("SecondaryStatus", "InProgress"),
                resources.get("InstanceType", "?"),
                int(resources.get("InstanceCount", 1)),
                "sagemaker_training",
            )


def _ecs_tasks(ctx: Context) -> list[dict]:
    ecs = ctx.aws.client("ecs")
    try:
        arns = [
            a
            for page in ecs.get_paginator("list_tasks").paginate(cluster=ctx.outputs.cluster_name)
            for a in page.get("taskArns", [])
        ]
    except ClientError as exc:
        if error_code(exc) == "ClusterNotFoundException":
            return []
        raise
    tasks = []
    for start in range(0, len(arns), 100):
        tasks += ecs.describe_tasks(cluster=ctx.outputs.cluster_name, tasks=arns[start : start + 100]).get("tasks", [])
    return tasks


def _endpoint_rows(ctx: Context, rows: _Rows) -> None:
    name = ctx.outputs.endpoint_name
    if not name:
        rows.append(("endpoint", "-", "none deployed", "-", "-"))
        return
    sagemaker = ctx.aws.client("sagemaker")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if error_code(exc) != "ValidationException":
            raise
        rows.append(("endpoint", name, "not found", "-", "-"))
        return
    variants = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    for variant in config.get("ProductionVariants", []):
        serverless = variant.get("ServerlessConfig")
        if serverless:  # billed per request: nothing per hour (docs/aws-behaviours.md C6)
            memory = int(serverless.get("MemorySizeInMB", 0))
            per_second = ctx.prices.serverless.get(memory)
            rows.append(
                (
                    "endpoint",
                    f"{name}/{variant['VariantName']}",
                    f"{endpoint.get('EndpointStatus', '?')}, serverless",
                    f"{memory} MB, up to {serverless.get('MaxConcurrency', '?')} at once",
                    f"$0/h idle; ${per_second:.7f} per second of each request"
                    if per_second is not None
                    else "per request (no price in table)",
                )
            )
            continue
        count = variants.get(variant["VariantName"], {}).get(
            "CurrentInstanceCount", variant.get("InitialInstanceCount", 0)
        )
        state = endpoint.get("EndpointStatus", "?")
        if config.get("AsyncInferenceConfig"):
            state += ", async (scales to zero)"
        rows.add(
            "endpoint",
            f"{name}/{variant['VariantName']}",
            state,
            variant.get("InstanceType", "?"),
            int(count),
            "sagemaker_hosting",
        )


def _recent_runs(ctx: Context) -> None:
    s3 = ctx.aws.client("s3")
    bucket = ctx.outputs.artifacts_bucket
    ids = sorted(run_id for run_id, info in runs.list_runs(s3, bucket).items() if info["record"])[-RECENT_RUNS:]
    if not ids:
        say("runs         none yet (make train TARGET=aws)")
        return
    rows = []
    for run_id in reversed(ids):
        record = runs.read_record(s3, bucket, run_id) or {}
        code = record.get("exit_code")
        rows.append(
            (
                run_id,
                record.get("backend", "?"),
                record.get("status", "?"),
                "-" if code is None else code,
                str(record.get("reason", ""))[:80],
            )
        )
    say("recent runs:")
    for line in table(("run", "backend", "status", "exit", "reason"), rows):
        say(f"  {line}")


def _age(when: datetime) -> str:
    minutes = int((datetime.now(UTC) - when).total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def logs(ctx: Context, run_id: str | None = None, endpoint: bool = False, since_hours: float = 1.0) -> list[str]:
    """Print a run's log lines (the newest run by default) or the endpoint's last ``since_hours``."""
    logs_client = ctx.aws.client("logs")
    if endpoint:
        name = ctx.outputs.endpoint_name
        if not name:
            raise OpsError("no endpoint is deployed: run `make deploy TARGET=aws` first")
        since_ms = int((datetime.now(UTC).timestamp() - since_hours * 3600) * 1000)
        group = deploy.ENDPOINT_LOG_GROUP.format(name=name)
        header(f"logs (aws): endpoint {name}, {group}, last {since_hours:g} h")
        lines = GroupTail(logs_client, group, since_ms).poll()
    else:
        s3 = ctx.aws.client("s3")
        bucket = ctx.outputs.artifacts_bucket
        if run_id is None:
            recorded = sorted(r for r, info in runs.list_runs(s3, bucket).items() if info["record"])
            if not recorded:
                raise OpsError("no training run yet: run `make train TARGET=aws` first")
            run_id = recorded[-1]
        record = runs.read_record(s3, bucket, run_id)
        if record is None:
            raise OpsError(f"no run {run_id}: `make status TARGET=aws` lists the recent runs")
        if "log_stream" in record:
            header(f"logs (aws): run {run_id}, {record['log_group']} {record['log_stream']}")
            lines = StreamTail(logs_client, record["log_group"], record["log_stream"]).poll()
        elif "log_stream_prefix" in record:
            hosts = int(record.get("instance_count") or 1)  # SageMaker: one stream per host, all of them shown
            header(
                f"logs (aws): run {run_id}, {record['log_group']} {record['log_stream_prefix']}*"
                + (f", {hosts} hosts" if hosts > 1 else "")
            )
            lines = GroupTail(
                logs_client, record["log_group"], 0, prefix=record["log_stream_prefix"], label_hosts=hosts > 1
            ).poll()
        else:
            raise OpsError(f"run {run_id} has no CloudWatch log (its task definition has no awslogs driver)")
    for line in lines:
        say(line)
    if not lines:
        say("(no log lines yet)")
    return lines
