"""`make train TARGET=aws`: the trainer image on AWS, watched live from launch to exit.

Both backends run the same image on the same contract (trainer/__main__.py) and end the same way: the model
at ``s3://<artifacts>/models/<run-id>/model.tar.gz`` with the run record ``run.json`` beside it.

- ``BACKEND=ecs`` (default, ecs.py): ECS ``RunTask`` on the stack's GPU capacity provider.
- ``BACKEND=sagemaker`` (sagemaker.py): a SageMaker training job with managed spot, on
  ``INSTANCE_COUNT`` instances (default 1; more than one is SageMaker only: ECS runs one task per run).

Before launching, the hourly price of the chosen capacity (all its instances) and the worst-case cost for the
maximum runtime are printed; ``MAX_COST=<dollars>`` lowers the maximum runtime to what that sum buys for all the
instances (``MAX_HOURS``, default 24, is the ceiling). With a stack budget (``deepcloud:monthlyBudget``), a run
whose worst case exceeds what is left of it this month is refused before anything is built or started
(ops/aws/budget.py).
Ctrl-C asks whether to stop the task or job; a stopped trainer checkpoints first.
"""

from __future__ import annotations

from ops.aws import budget, dataset, images, network, runs
from ops.aws.console import Phases, ask, header, say
from ops.aws.context import Context
from ops.aws.prices import duration, max_runtime_s, usd
from ops.aws.training.base import EXIT_STOPPED, Backend, Outcome, RunRecord, TrainOptions
from ops.aws.training.ecs import EcsBackend
from ops.aws.training.sagemaker import SageMakerBackend
from ops.errors import OpsError


def make_backend(ctx: Context, options: TrainOptions) -> Backend:
    """The backend ``options.backend`` names (TrainOptions checked the name)."""
    if options.backend == "sagemaker":
        return SageMakerBackend(ctx, options.instance_type, options.instance_count)
    return EcsBackend(ctx)


def run(ctx: Context, options: TrainOptions) -> dict:
    """Price, check the budget, launch and watch one run to its end; the run record as written to run.json."""
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
) -> tuple[RunRecord, Outcome]:
    out = ctx.outputs
    s3 = ctx.aws.client("s3")
    image = images.ensure(ctx.aws, ctx.repo, images.IMAGES["trainer"], out.trainer_repository_url)
    backend.prepare(image)
    record = RunRecord(
        run_id=run_id,
        backend=backend.name,
        stack=ctx.stack.name,
        created_at=runs.now_iso(),
        image=image.uri,
        image_digest=image.digest,
        hyperparameters=dict(options.hyperparameters),
        channels=channels,
        model_uri=f"s3://{out.artifacts_bucket}/{runs.model_key(run_id)}",
        checkpoint_uri=runs.checkpoint_uri(out.artifacts_bucket, options.resume or run_id),
        max_runtime_s=max_runtime,
        max_cost_usd=options.max_cost,
        usd_per_hour_max=hourly,
        instance_count=options.instance_count,
        priced_instance_type=priced_type,
        prices=ctx.prices.note(out.region),
    )
    backend.launch(record, image, channels, max_runtime)
    record.status = "Running"
    runs.write_record(s3, out.artifacts_bucket, record.to_json())
    phases = Phases(f"run {run_id}", clock=ctx.clock)
    try:
        outcome = _watch(backend, record, max_runtime, phases)
    finally:
        phases.close()
    return record, outcome


class LeftRunning(OpsError):
    """The run was left running on purpose (Ctrl-C, then no): what it needs, such as the network, must stay."""

    keeps_network = True


def _watch(backend: Backend, record: RunRecord, max_runtime: int, phases: Phases) -> Outcome:
    what = record.launched_as
    try:
        return backend.watch(record, max_runtime, phases)
    except KeyboardInterrupt:
        say("")
        if not ask(f"stop {what}? (the trainer checkpoints first)", default=True):
            raise LeftRunning(
                f"left {what} running: `make logs TARGET=aws RUN={record.run_id}` follows it, "
                "`make status TARGET=aws` shows its cost, `make destroy TARGET=aws` stops it"
            ) from None
    backend.stop(record, "stopped from make train (Ctrl-C)")
    say(f"asked to stop {what}; waiting for it to checkpoint and exit (Ctrl-C again to leave it)")
    try:
        return backend.watch(record, max_runtime, phases)
    except KeyboardInterrupt:
        raise LeftRunning(f"left {what} stopping: `make status TARGET=aws` shows when it is gone") from None


def _finish(ctx: Context, backend: Backend, record: RunRecord, outcome: Outcome, hourly: float) -> dict:
    out = ctx.outputs
    record.status, record.exit_code, record.reason = outcome.status, outcome.exit_code, outcome.reason
    record.stopped_at = runs.now_iso()
    cost = ""
    if outcome.billed_s is not None:
        record.billed_s = round(outcome.billed_s)
        record.cost_usd_max = round(hourly * outcome.billed_s / 3600, 4)
        cost = f"; {duration(outcome.billed_s)} billed, at most {usd(record.cost_usd_max)}"
    if outcome.status == "Completed":
        try:
            backend.collect(record, outcome)
        except OpsError as exc:
            record.status, record.reason = "Failed", str(exc)
    saved = record.to_json()
    runs.write_record(ctx.aws.client("s3"), out.artifacts_bucket, saved)
    code = "none" if outcome.exit_code is None else str(outcome.exit_code)
    say(f"stopped      {record.status}, exit code {code}: {record.reason}{cost}")
    if (idle := backend.idle_note(record)) is not None:
        say(f"afterwards   {idle}")
    say(f"run record   s3://{out.artifacts_bucket}/{runs.record_key(record.run_id)}")
    if record.status == "Completed":
        say(f"model        {record.model_uri}")
        say("next         make deploy TARGET=aws")
        return saved
    resume = (
        f"its checkpoints are in {record.checkpoint_uri}: `make train TARGET=aws RESUME={record.run_id}` continues it"
    )
    if record.status == "Interrupted":
        raise OpsError(
            f"run {record.run_id} was interrupted: EC2 reclaimed its spot instance ({record.reason}); {resume}"
        )
    if outcome.exit_code == EXIT_STOPPED or record.status == "Stopped":
        raise OpsError(f"run {record.run_id} was stopped ({record.reason}); {resume}")
    raise OpsError(f"run {record.run_id} failed (exit code {code}): {record.reason}")
