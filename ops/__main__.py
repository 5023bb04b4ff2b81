"""The commands behind the Make targets: ``python -m ops [--target local|container|aws] COMMAND``.

TARGET=local (the default, ops/local/):

    data      write the demo dataset as PNG channels: DATASET=digits (default, scikit-learn's 8x8 digits) or
              DATASET=mnist (5,000 real 28x28 MNIST digits); each in .deepcloud/data/<DATASET>/
    train     run a training job on DATASET: SageMaker layout under .deepcloud/local/jobs/<id>/
    deploy    start the server on 127.0.0.1:8080 (PORT= moves it) with the latest artifact; return once /ping is 200
    predict   send the test images to the endpoint; accuracy and latency
    destroy   stop the server and remove .deepcloud/local (the dataset is kept); a no-op when clean
    demo      all of the above in order, destroy always last, and a summary

TARGET=container (ops/container/): data, train, deploy, predict, destroy and demo as for local, with the trainer
and the server in their images under Docker, run the way SageMaker runs them (jobs in .deepcloud/container/);
`images` builds both images here without network (`make images`).

TARGET=aws (ops/aws/): preflight, data, train, deploy, predict, rollback, status, logs, destroy against the
Pulumi stack; see ops/aws/cli.py. `make data TARGET=aws DATASET=mnist` uploads to s3://<data>/mnist/.

Expected failures print one line, ``error: ...``, and exit 1; so do AWS errors (credentials, permissions).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ops.aws import COMMANDS as AWS_COMMANDS
from ops.aws.training.base import DEFAULT_BACKEND, DEFAULT_INSTANCE_TYPE
from ops.container.cli import ContainerTarget
from ops.errors import OpsError
from ops.local.cli import COMMANDS as LOCAL_COMMANDS
from ops.local.cli import LocalTarget
from ops.paths import Paths

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("local", "container", "aws")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        default=os.environ.get("TARGET") or "local",
        help="where to run: local (default), container (the images under Docker, see "
        "ops/container/) or aws (the Pulumi stack, see ops/aws/)",
    )
    parser.add_argument("command", choices=sorted({*LOCAL_COMMANDS, *AWS_COMMANDS}))
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE ...",
        help="hyperparameters for train/demo, e.g. --hp 'epochs=10 lr=0.002'",
    )
    parser.add_argument(
        "--model",
        help="deploy: artifact directory or model.tar.gz (default: latest job); "
        "aws: the run id to deploy (env MODEL; default: the newest model)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8080")), help="deploy: local port (default 8080)"
    )
    aws = parser.add_argument_group("TARGET=aws (each also read from the environment variable in capitals)")
    aws.add_argument("--stack", help="Pulumi stack (default: the selected one)")
    aws.add_argument(
        "--backend", help=f"train: {DEFAULT_BACKEND} (default: ECS RunTask on the GPU capacity) or sagemaker"
    )
    aws.add_argument("--max-cost", help="train: dollars at most; lowers the maximum runtime to what they buy")
    aws.add_argument("--max-hours", help="train: maximum runtime in hours (default 24)")
    aws.add_argument(
        "--instance-type", help=f"train with BACKEND=sagemaker: instance type (default {DEFAULT_INSTANCE_TYPE})"
    )
    aws.add_argument("--resume", help="train: run id whose checkpoints the new run starts from")
    aws.add_argument("--run", help="logs: run id (default: the newest run)")
    aws.add_argument("--endpoint", action="store_true", help="logs: the endpoint's log instead of a run's")
    return parser


def run(target: str, command: str, args: argparse.Namespace) -> object:
    """Run ``command`` on ``target``; the aws package is imported only when chosen (it pulls in boto3)."""
    if target not in TARGETS:
        raise OpsError(f"TARGET={target} is not a target: use local (default), container or aws")
    paths = Paths.from_environ()
    if target == "aws":
        from ops.aws import cli as aws

        return aws.run(command, args, paths, REPO)
    target_commands = ContainerTarget if target == "container" else LocalTarget
    return target_commands(paths, REPO).run(command, args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args.target, args.command, args)
    except OpsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        hint = "`make status TARGET=aws` shows what runs" if args.target == "aws" else "run `make destroy` to clean up"
        print(f"error: interrupted; {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
