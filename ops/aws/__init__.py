"""TARGET=aws: the Make targets against the Pulumi stack (infra/), driven through its outputs.

    preflight  credentials, pulumi CLI and stack outputs, Docker engine, GPU quotas (preflight.py)
    data       the demo dataset, copied to the stack's data bucket (dataset.py)
    train      the trainer image as an ECS task (BACKEND=ecs) or a SageMaker job (BACKEND=sagemaker) (train.py)
    deploy     a trained run behind the SageMaker endpoint via `pulumi up` (deploy.py); on a multi-model
               endpoint a copy under its S3 prefix instead, no `pulumi up` (multi_model.py)
    predict    the test images through the endpoint, in its mode (predict.py); MODEL= picks the run on a
               multi-model endpoint
    rollback   the previous deploy again (deploy.py)
    status     what runs and what it costs per hour (status.py)
    logs       a run's log, or the endpoint's (status.py)
    destroy    stop runs, `pulumi destroy`, audit what is left by the stack tag (destroy.py)

Settings come from flags or the environment (Make passes its command-line variables on): STACK (the Pulumi
stack; default the selected one), BACKEND, MAX_COST (dollars), MAX_HOURS, INSTANCE_TYPE and INSTANCE_COUNT
(SageMaker: the instance type, and how many instances the one job runs on; default 1), RESUME
(a run id whose checkpoints to start from), MODEL (the run to deploy; on a multi-model endpoint also the one
predict sends to), RUN (the run for logs), ENDPOINT=1 (logs of the endpoint).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ops.errors import OpsError
from ops.paths import Paths

COMMANDS = ("preflight", "data", "train", "deploy", "rollback", "predict", "status", "logs", "destroy")


def _setting(args: argparse.Namespace, name: str, env: str, default: str | None = None) -> str | None:
    value = getattr(args, name, None)
    return value if value not in (None, "") else (os.environ.get(env) or default)


def _number(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise OpsError(f"{name}={text!r} is not a number: write e.g. {name}=5") from None


def run(command: str, args: argparse.Namespace, paths: Paths, repo: Path) -> object:
    """Run one aws command; AWS's own errors (credentials, permissions, throttling) become one-line OpsErrors."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from ops.aws.clients import describe

    try:
        return _dispatch(command, args, paths, repo)
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        raise OpsError(describe(exc)) from None


def _dispatch(command: str, args: argparse.Namespace, paths: Paths, repo: Path) -> object:
    from ops.aws import preflight
    from ops.aws.context import open_context

    if command not in COMMANDS:
        raise OpsError(
            f"`{command}` runs on TARGET=local only: run make train, make deploy and make destroy with TARGET=aws"
        )
    stack = _setting(args, "stack", "STACK")
    backend = _setting(args, "backend", "BACKEND", "ecs") or "ecs"
    instance_type = _setting(args, "instance_type", "INSTANCE_TYPE", "ml.g5.xlarge") or "ml.g5.xlarge"
    if command in ("preflight", "train"):
        from ops.aws.train import instance_count as parse_count

        count = parse_count(_setting(args, "instance_count", "INSTANCE_COUNT"), backend)
    if command == "preflight":
        return preflight.run(repo, paths, stack, backend=backend, instance_type=instance_type, instance_count=count)
    if command == "train":
        from ops.aws.train import BACKENDS, DEFAULT_MAX_HOURS, TrainOptions
        from ops.aws.train import run as train
        from ops.data import with_defaults
        from ops.local_train import parse_hyperparameters

        if backend not in BACKENDS:
            raise OpsError(f"BACKEND={backend} is not a training backend: use ecs (default) or sagemaker")
        options = TrainOptions(
            hyperparameters=with_defaults(paths.dataset_name, parse_hyperparameters(args.hp)),
            dataset=paths.dataset_name,
            backend=backend,
            instance_type=instance_type,
            max_hours=_number(_setting(args, "max_hours", "MAX_HOURS"), "MAX_HOURS") or DEFAULT_MAX_HOURS,
            max_cost=_number(_setting(args, "max_cost", "MAX_COST"), "MAX_COST"),
            resume=_setting(args, "resume", "RESUME"),
            instance_count=count,
        )
        ctx = preflight.run(
            repo, paths, stack, backend=backend, instance_type=instance_type, docker=False, instance_count=count
        )
        return train(ctx, options)
    if command in ("deploy", "rollback"):
        from ops.aws import deploy

        ctx = preflight.run(repo, paths, stack, docker=False, quotas=False)
        return deploy.deploy(ctx, _setting(args, "model", "MODEL")) if command == "deploy" else deploy.rollback(ctx)
    if command == "destroy":
        from ops.aws.destroy import destroy

        return destroy(preflight.run(repo, paths, stack, docker=False, quotas=False))
    ctx = open_context(repo, paths, stack)
    if command == "data":
        from ops.aws import dataset
        from ops.aws.console import header
        from ops.data import dataset_named, prepare

        prefix = dataset.dataset_prefix(paths.dataset_name)
        header(f"data (aws): {paths.dataset_name} -> {paths.dataset} -> s3://{ctx.outputs.data_bucket}/{prefix}")
        prepare(dataset_named(paths.dataset_name), paths.dataset)
        return dataset.upload(ctx.aws.client("s3"), paths.dataset, ctx.outputs.data_bucket, prefix)
    if command == "status":
        from ops.aws.status import status

        return status(ctx)
    if command == "predict":
        from ops.aws.predict import predict

        return predict(ctx, _setting(args, "model", "MODEL"))
    from ops.aws.status import logs

    endpoint = bool(getattr(args, "endpoint", False)) or os.environ.get("ENDPOINT", "") in ("1", "true", "yes")
    return logs(ctx, _setting(args, "run", "RUN"), endpoint=endpoint)
