"""`make train TARGET=aws`: the trainer image on AWS, watched live from launch to exit.

Both backends run the same image on the same contract (trainer/__main__.py) and end the same way: the model
at ``s3://<artifacts>/models/<run-id>/model.tar.gz`` with the run record ``run.json`` beside it.

- ``BACKEND=ecs`` (default, train_ecs.py): ECS ``RunTask`` on the stack's GPU capacity provider.
- ``BACKEND=sagemaker`` (train_sagemaker.py): a SageMaker training job with managed spot, on
  ``INSTANCE_COUNT`` instances (default 1; more than one is SageMaker only: ECS runs one task per run).

Before launching, the hourly price of the chosen capacity (all its instances) and the worst-case cost for the
maximum runtime are printed; ``MAX_COST=<dollars>`` lowers the maximum runtime to what that sum buys for all the
instances (``MAX_HOURS``, default 24, is the ceiling). With a stack budget (``deepcloud:monthlyBudget``), a run
whose worst case exceeds what is left of it this month is refused before anything is built or started (budget.py).
Ctrl-C asks whether to stop the task or job; a stopped trainer checkpoints first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ops.aws import budget, dataset, images, network, runs
from ops.aws.console import Phases, ask, header, say
from ops.aws.context import Context
from ops.aws.prices import duration, max_runtime_s, usd
from ops.errors import OpsError

BACKENDS = ("ecs", "sagemaker")
DEFAULT_MAX_HOURS = 24.0
EXIT_STOPPED = 143
"""The trainer's exit code after SIGTERM and a checkpoint (trainer/__main__.py)."""


@dataclass(frozen=True, slots=True)
class TrainOptions:
    hyperparameters: dict[str, str]
    dataset: str = "digits"
    """``DATASET``: its channels are read from ``s3://<data>/<dataset>/`` (`make data TARGET=aws` puts them there)."""
    backend: str = "ecs"
    max_hours: float = DEFAULT_MAX_HOURS
    max_cost: float | None = None
    instance_type: str = "ml.g5.xlarge"
    """SageMaker only: the training instance type (ECS uses the stack's GPU capacity)."""
    resume: str | None = None
    """Run id whose checkpoints this run starts from."""
    instance_count: int = 1
    """SageMaker only: instances of the one training job (``ResourceConfig.InstanceCount``); from
    ``instance_count()``, which refuses more than one on ECS."""


def instance_count(text: str | None, backend: str) -> int:
    """``INSTANCE_COUNT`` as given (default 1), checked once for every command that reads it: a positive whole
    number, and 1 unless the backend is SageMaker."""
    if text is None or text.strip() == "":
        return 1
    try:
        count = int(text.strip())
    except ValueError:
        count = 0
    if count < 1:
        raise OpsError(f"INSTANCE_COUNT={text!r} is not a positive whole number: write e.g. INSTANCE_COUNT=2")
    if count > 1 and backend != "sagemaker":
        raise OpsError(
            f"INSTANCE_COUNT={count} needs BACKEND=sagemaker: BACKEND={backend} runs one instance per "
            f"run; use `make train TARGET=aws BACKEND=sagemaker INSTANCE_COUNT={count}`"
        )
    return count


@dataclass
class Outcome:
    status: str
    """Completed, Failed, Stopped or Interrupted (a spot reclaim stopped it; resumable)."""
    exit_code: int | None
    reason: str
    billed_s: float | None = None
    log_lines: list[str] = field(default_factory=list)


class Backend(Protocol):
    name: str

    def price(self) -> tuple[str, float, str]:
        """(instance type priced, worst-case USD per hour of one instance, how the capacity is bought)."""

    def prepare(self, image: images.Image) -> None:
        """Make the image runnable (ECS: the task definition must name it)."""

    def launch(self, record: dict, image: images.Image, channels: dict[str, str], max_runtime: int) -> None:
        """Start the run; fill in what identifies it (task ARN, job name, logs) in ``record``."""

    def watch(self, record: dict, max_runtime: int, phases: Phases) -> Outcome:
        """Follow the run until it ends, printing phases and log lines; enforce ``max_runtime``."""

    def stop(self, record: dict, reason: str) -> None:
        """Ask the platform to stop the run (the trainer gets SIGTERM and checkpoints)."""

    def collect(self, record: dict, outcome: Outcome) -> None:
        """After a completed run: make sure the model is at models/<run-id>/model.tar.gz."""

    def idle_note(self, record: dict) -> str | None:
        """What the capacity goes on costing after the run ends, if anything."""


def make_backend(ctx: Context, options: TrainOptions) -> Backend:
    if options.backend == "ecs":
        from ops.aws.train_ecs import EcsBackend

        return EcsBackend(ctx)
    if options.backend == "sagemaker":
        from ops.aws.train_sagemaker import SageMakerBackend

        return SageMakerBackend(ctx, options.instance_type, options.instance_count)
    raise OpsError(f"BACKEND={options.backend} is not a training backend: use ecs (default) or sagemaker")


def run(ctx: Context, options: TrainOptions) -> dict:
    out = ctx.outputs
    s3 = ctx.aws.client("s3")
    backend = make_backend(ctx, options)
    run_id = runs.new_run_id()
    header(f"train (aws, {backend.name}): run {run_id}, stack {ctx.stack.name}")
    channels = dataset.channels(s3, out.data_bucket, options.dataset)
    priced_type, each, purchase = backend.price()
    count = options.instance_count
    hourly = each * count  # every instance of the job bills for its whole runtime
    max_runtime = max_runtime_s(hourly, options.max_hours, options.max_cost)
    limit = (
        f"MAX_COST={options.max_cost:g}"
        if options.max_cost is not None and max_runtime < options.max_hours * 3600
        else f"MAX_HOURS={options.max_hours:g}"
    )
    per = f"{count} x {usd(each)}/h, " if count > 1 else ""
    say(f"capacity     {purchase}: at most {usd(hourly)}/h ({per}{priced_type} on-demand)")
    worst = hourly * max_runtime / 3600
    say(f"max runtime  {duration(max_runtime)} ({limit}); worst case {usd(worst)}")
    say(f"prices       {ctx.prices.note(out.region)}")
    budget.check(ctx, worst)
    if options.resume and runs.read_record(s3, out.artifacts_bucket, options.resume) is None:
        raise OpsError(f"no run {options.resume} to resume: `make status TARGET=aws` lists the runs")
    with network.endpoints_for_run(ctx):
        record, outcome = _launch_and_watch(ctx, backend, options, run_id, channels, max_runtime, hourly, priced_type)
        return _finish(ctx, backend, record, outcome, hourly)


def _launch_and_watch(
    ctx: Context,
    backend: Backend,
    options: TrainOptions,
    run_id: str,
    channels: dict[str, str],
    max_runtime: int,
    hourly: float,
    priced_type: str,
) -> tuple[dict, Outcome]:
    out = ctx.outputs
    s3 = ctx.aws.client("s3")
    image = images.ensure(ctx.aws, ctx.repo, images.IMAGES["trainer"], out.trainer_repository_url)
    backend.prepare(image)
    record = {
        "run_id": run_id,
        "backend": backend.name,
        "stack": ctx.stack.name,
        "status": "Starting",
        "created_at": runs.now_iso(),
        "image": image.uri,
        "image_digest": image.digest,
        "hyperparameters": dict(options.hyperparameters),
        "channels": channels,
        "model_uri": f"s3://{out.artifacts_bucket}/{runs.model_key(run_id)}",
        "checkpoint_uri": runs.checkpoint_uri(out.artifacts_bucket, options.resume or run_id),
        "max_runtime_s": max_runtime,
        "max_cost_usd": options.max_cost,
        "usd_per_hour_max": hourly,
        "instance_count": options.instance_count,
        "priced_instance_type": priced_type,
        "prices": ctx.prices.note(out.region),
    }
    backend.launch(record, image, channels, max_runtime)
    record["status"] = "Running"
    runs.write_record(s3, out.artifacts_bucket, record)
    phases = Phases(f"run {run_id}", clock=ctx.clock)
    try:
        outcome = _watch(backend, record, max_runtime, phases)
    finally:
        phases.close()
    return record, outcome


class LeftRunning(OpsError):
    """The run was left running on purpose (Ctrl-C, then no): what it needs, such as the network, must stay."""

    keeps_network = True


def _watch(backend: Backend, record: dict, max_runtime: int, phases: Phases) -> Outcome:
    what = record.get("task_arn") or record.get("job_name")
    try:
        return backend.watch(record, max_runtime, phases)
    except KeyboardInterrupt:
        say("")
        if not ask(f"stop {what}? (the trainer checkpoints first)", default=True):
            raise LeftRunning(
                f"left {what} running: `make logs TARGET=aws RUN={record['run_id']}` follows it, "
                "`make status TARGET=aws` shows its cost, `make destroy TARGET=aws` stops it"
            ) from None
    backend.stop(record, "stopped from make train (Ctrl-C)")
    say(f"asked to stop {what}; waiting for it to checkpoint and exit (Ctrl-C again to leave it)")
    try:
        return backend.watch(record, max_runtime, phases)
    except KeyboardInterrupt:
        raise LeftRunning(f"left {what} stopping: `make status TARGET=aws` shows when it is gone") from None


def _finish(ctx: Context, backend: Backend, record: dict, outcome: Outcome, hourly: float) -> dict:
    out = ctx.outputs
    s3 = ctx.aws.client("s3")
    record.update(status=outcome.status, exit_code=outcome.exit_code, reason=outcome.reason, stopped_at=runs.now_iso())
    if outcome.billed_s is not None:
        record["billed_s"] = round(outcome.billed_s)
        record["cost_usd_max"] = round(hourly * outcome.billed_s / 3600, 4)
    if outcome.status == "Completed":
        try:
            backend.collect(record, outcome)
        except OpsError as exc:
            record.update(status="Failed", reason=str(exc))
    runs.write_record(s3, out.artifacts_bucket, record)
    code = "none" if outcome.exit_code is None else str(outcome.exit_code)
    cost = (
        f"; {duration(outcome.billed_s)} billed, at most {usd(record['cost_usd_max'])}"
        if outcome.billed_s is not None
        else ""
    )
    say(f"stopped      {record['status']}, exit code {code}: {record['reason']}{cost}")
    if (idle := backend.idle_note(record)) is not None:
        say(f"afterwards   {idle}")
    say(f"run record   s3://{out.artifacts_bucket}/{runs.record_key(record['run_id'])}")
    if record["status"] == "Completed":
        say(f"model        {record['model_uri']}")
        say("next         make deploy TARGET=aws")
        return record
    if record["status"] == "Interrupted":
        raise OpsError(
            f"run {record['run_id']} was interrupted: EC2 reclaimed its spot instance ({record['reason']}); "
            f"its checkpoints are in {record['checkpoint_uri']}: `make train TARGET=aws "
            f"RESUME={record['run_id']}` continues it"
        )
    if outcome.exit_code == EXIT_STOPPED or record["status"] == "Stopped":
        raise OpsError(
            f"run {record['run_id']} was stopped ({record['reason']}); its checkpoints are in "
            f"{record['checkpoint_uri']}: `make train TARGET=aws RESUME={record['run_id']}` continues it"
        )
    raise OpsError(f"run {record['run_id']} failed (exit code {code}): {record['reason']}")
