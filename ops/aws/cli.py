"""TARGET=aws's dispatcher: the settings read and checked once (:class:`AwsOptions`), then one function per command
(the commands and their settings are listed in ops/aws/__init__.py)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from ops import data, hyperparameters
from ops.aws import COMMANDS, dataset, deploy, multi_model, preflight, status
from ops.aws import predict as aws_predict
from ops.aws.clients import describe
from ops.aws.console import header
from ops.aws.context import Context, open_context
from ops.aws.destroy import destroy as destroy_stack
from ops.aws.training import run as training
from ops.aws.training.base import (
    DEFAULT_BACKEND,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_MAX_HOURS,
    TrainOptions,
    check_backend,
    instance_count,
)
from ops.errors import OpsError
from ops.paths import Paths

TRUE = ("1", "true", "yes")
"""What ENDPOINT= counts as set."""


def _setting(args: argparse.Namespace, name: str, env: str, default: str | None = None) -> str | None:
    """A flag, else its environment variable (Make passes its command-line variables on), else ``default``."""
    value = getattr(args, name, None)
    return value if value not in (None, "") else (os.environ.get(env) or default)


def _number(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise OpsError(f"{name}={text!r} is not a number: write e.g. {name}=5") from None


@dataclass(frozen=True, slots=True)
class AwsOptions:
    """One aws command's settings, checked before anything reads the stack; a bad one is a one-line OpsError."""

    command: str
    stack: str | None = None
    """STACK: the Pulumi stack (None: the selected one)."""
    backend: str = DEFAULT_BACKEND
    """BACKEND, checked for the commands that use it (preflight, train)."""
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    model: str | None = None
    """MODEL: the run to deploy (or, on a multi-model endpoint, to predict with)."""
    run: str | None = None
    """RUN: the run whose log `logs` prints (None: the newest)."""
    endpoint: bool = False
    """ENDPOINT=1: `logs` prints the endpoint's log instead of a run's."""
    train: TrainOptions | None = None
    """The run `train` starts (hyperparameters over the dataset's defaults, limits); None for other commands."""

    @classmethod
    def parse(cls, command: str, args: argparse.Namespace, paths: Paths) -> AwsOptions:
        if command not in COMMANDS:
            raise OpsError(
                f"`{command}` runs on TARGET=local only: run make train, make deploy and make destroy with TARGET=aws"
            )
        backend = _setting(args, "backend", "BACKEND", DEFAULT_BACKEND) or DEFAULT_BACKEND
        instance_type = _setting(args, "instance_type", "INSTANCE_TYPE", DEFAULT_INSTANCE_TYPE) or DEFAULT_INSTANCE_TYPE
        count = 1
        if command in ("preflight", "train"):
            count = instance_count(_setting(args, "instance_count", "INSTANCE_COUNT"), check_backend(backend))
        return cls(
            command=command,
            stack=_setting(args, "stack", "STACK"),
            backend=backend,
            instance_type=instance_type,
            instance_count=count,
            model=_setting(args, "model", "MODEL"),
            run=_setting(args, "run", "RUN"),
            endpoint=bool(getattr(args, "endpoint", False)) or os.environ.get("ENDPOINT", "") in TRUE,
            train=_train_options(args, paths, backend, instance_type, count) if command == "train" else None,
        )


def _train_options(
    args: argparse.Namespace, paths: Paths, backend: str, instance_type: str, count: int
) -> TrainOptions:
    return TrainOptions(
        hyperparameters=hyperparameters.resolve(paths.dataset_name, args.hp),
        dataset=paths.dataset_name,
        backend=backend,
        instance_type=instance_type,
        max_hours=_number(_setting(args, "max_hours", "MAX_HOURS"), "MAX_HOURS") or DEFAULT_MAX_HOURS,
        max_cost=_number(_setting(args, "max_cost", "MAX_COST"), "MAX_COST"),
        resume=_setting(args, "resume", "RESUME"),
        instance_count=count,
    )


def run(command: str, args: argparse.Namespace, paths: Paths, repo: Path) -> object:
    """Run one aws command; AWS's own errors (credentials, permissions, throttling) become one-line OpsErrors."""
    options = AwsOptions.parse(command, args, paths)
    try:
        return COMMAND_RUNNERS[command](options, paths, repo)
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        raise OpsError(describe(exc)) from None


def _checked(options: AwsOptions, paths: Paths, repo: Path, **checks: bool) -> Context:
    """The preflight checks this command needs, in order; the context they opened."""
    return preflight.run(
        repo,
        paths,
        options.stack,
        backend=options.backend,
        instance_type=options.instance_type,
        instance_count=options.instance_count,
        **checks,
    )


def _preflight(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return _checked(options, paths, repo)


def _train(options: AwsOptions, paths: Paths, repo: Path) -> object:
    assert options.train is not None  # AwsOptions.parse makes it for train
    return training.run(_checked(options, paths, repo, docker=False), options.train)


def _deploy(options: AwsOptions, paths: Paths, repo: Path) -> object:
    ctx = _checked(options, paths, repo, docker=False, quotas=False)
    run_id, config = deploy.chosen_run(ctx, options.model)
    if multi_model.is_multi_model(ctx, config):  # a copy under the endpoint's prefix, no `pulumi up`
        return multi_model.deploy_run(ctx, run_id, config)
    return deploy.deploy(ctx, run_id, config)


def _rollback(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return deploy.rollback(_checked(options, paths, repo, docker=False, quotas=False))


def _destroy(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return destroy_stack(_checked(options, paths, repo, docker=False, quotas=False))


def _data(options: AwsOptions, paths: Paths, repo: Path) -> object:
    ctx = open_context(repo, paths, options.stack)
    prefix = dataset.dataset_prefix(paths.dataset_name)
    header(f"data (aws): {paths.dataset_name} -> {paths.dataset} -> s3://{ctx.outputs.data_bucket}/{prefix}")
    data.prepare(data.dataset_named(paths.dataset_name), paths.dataset)
    return dataset.upload(ctx.aws.client("s3"), paths.dataset, ctx.outputs.data_bucket, prefix)


def _status(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return status.status(open_context(repo, paths, options.stack))


def _predict(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return aws_predict.predict(open_context(repo, paths, options.stack), options.model)


def _logs(options: AwsOptions, paths: Paths, repo: Path) -> object:
    return status.logs(open_context(repo, paths, options.stack), options.run, endpoint=options.endpoint)


COMMAND_RUNNERS: dict[str, Callable[[AwsOptions, Paths, Path], object]] = {
    "preflight": _preflight,
    "data": _data,
    "train": _train,
    "deploy": _deploy,
    "rollback": _rollback,
    "predict": _predict,
    "status": _status,
    "logs": _logs,
    "destroy": _destroy,
}
