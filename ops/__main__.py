"""The commands behind the Make targets: ``python -m ops [--target local|container|aws] COMMAND``.

TARGET=local (the default):

    data      write the demo dataset as PNG channels: DATASET=digits (default, scikit-learn's 8x8 digits) or
              DATASET=mnist (5,000 real 28x28 MNIST digits); each in .deepcloud/data/<DATASET>/
    train     run a training job on DATASET: SageMaker layout under .deepcloud/local/jobs/<id>/
    deploy    start the server on 127.0.0.1:8080 (PORT= moves it) with the latest artifact; return once /ping is 200
    predict   send the test images to the endpoint; accuracy and latency
    destroy   stop the server and remove .deepcloud/local (the dataset is kept); a no-op when clean
    demo      all of the above in order, destroy always last, and a summary

TARGET=container (ops/container.py): data, train, deploy, predict, destroy and demo as for local, with the trainer
and the server in their images under Docker, run the way SageMaker runs them (jobs in .deepcloud/container/);
`images` builds both images here without network (`make images`).

TARGET=aws (ops/aws/): preflight, data, train, deploy, predict, rollback, status, logs, destroy against the
Pulumi stack; see ops/aws/__init__.py. `make data TARGET=aws DATASET=mnist` uploads to s3://<data>/mnist/.

Expected failures print one line, ``error: ...``, and exit 1; so do AWS errors (credentials, permissions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from ops import container, local_server
from ops.data import DEFAULT_DATASET, dataset_is_complete, dataset_named, prepare, with_defaults
from ops.errors import OpsError
from ops.local_train import latest_model, parse_hyperparameters, run_training
from ops.paths import Paths
from ops.predict import run_predictions

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("local", "container", "aws")
DEMO_MIN_ACCURACY = 0.95
"""The demo's promise: the model trained on the dataset reaches this test accuracy (digits and mnist alike)."""


def _header(text: str) -> None:
    print(f"==> {text}", flush=True)


def cmd_data(paths: Paths, args: argparse.Namespace) -> dict:
    dataset = dataset_named(paths.dataset_name)
    _header(f"data: {dataset.name} ({dataset.source}) -> {paths.dataset}")
    if dataset_is_complete(paths.dataset):
        print(f"reusing the dataset already at {paths.dataset} (delete the folder to write it again)", flush=True)
    sizes = prepare(dataset, paths.dataset)
    print("splits " + " ".join(f"{k}={v}" for k, v in sizes.items()), flush=True)
    return sizes


def _session(args: argparse.Namespace) -> container.Session | None:
    return getattr(args, "session", None)


def cmd_train(paths: Paths, args: argparse.Namespace):
    session = _session(args)
    _header(f"train ({'container' if session else 'local'})")
    hyperparameters = with_defaults(paths.dataset_name, parse_hyperparameters(args.hp))
    if session:
        result = container.train(session, paths.dataset, hyperparameters)
    else:
        result = run_training(paths, paths.dataset, hyperparameters, REPO)
    # The trainer printed its metrics, artifact and report already (as paths inside the job, which are these
    # paths here and /opt/ml/... in a container): add only what it could not say.
    if session:
        print(f"artifact {result.model_dir}", flush=True)
        print(f"report {result.report}", flush=True)
    print(f"packed {result.archive}", flush=True)
    return result


def cmd_deploy(paths: Paths, args: argparse.Namespace):
    session = _session(args)
    model = (
        Path(args.model)
        if args.model
        else (latest_model(session.paths, "container") if session else latest_model(paths))
    )
    _header(f"deploy ({'container' if session else 'local'}): {model}")
    if session:
        deployment = container.deploy(session, model, port=args.port)
        print(
            f"serving {deployment.url}/invocations  container {deployment.container}  image {deployment.image}",
            flush=True,
        )
    else:
        deployment = local_server.deploy(paths, model, REPO, port=args.port)
        print(f"serving {deployment.url}/invocations  pid {deployment.pid}  log {deployment.log}", flush=True)
    return deployment


def cmd_predict(paths: Paths, args: argparse.Namespace):
    session = _session(args)
    deployment = container.read_deployment(paths) if session else local_server.read_deployment(paths)
    if deployment is None:
        target = " TARGET=container" if session else ""
        raise OpsError(f"nothing is deployed: run `make deploy{target}` first")
    _header(f"predict: {paths.dataset / 'test'} -> {deployment.url}/invocations")
    report = run_predictions(deployment.host, deployment.port, paths.dataset / "test", Path(deployment.model_dir))
    for line in report.lines():
        print(line)
    if report.in_process_accuracy is not None and not report.matches:
        raise OpsError(
            "accuracy over HTTP differs from the in-process accuracy of the same artifact: "
            "the server and trainer disagree on the model's input; see docs/artifact.md"
        )
    return report


def cmd_destroy(paths: Paths, args: argparse.Namespace) -> list[str]:
    session = _session(args)
    _header(f"destroy ({'container' if session else 'local'})")
    done = container.destroy(session) if session else local_server.destroy(paths)
    print("\n".join(done) if done else "nothing to destroy", flush=True)
    return done


def cmd_images(paths: Paths, args: argparse.Namespace) -> None:
    session = _session(args)
    if session is None:
        raise OpsError("`images` builds the images here: run make images (TARGET=aws builds and pushes them itself)")
    _header("images: trainer and serving, built here without network")
    container.build_images(session)


def cmd_demo(paths: Paths, args: argparse.Namespace) -> None:
    timings: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        try:
            return fn(paths, args)
        finally:
            timings[name] = time.perf_counter() - t0

    try:
        timed("data", cmd_data)
        trained = timed("train", cmd_train)
        shutil.copyfile(trained.report, paths.home / "demo-report.png")  # destroy removes the job
        args.model = str(trained.model_dir)
        timed("deploy", cmd_deploy)
        report = timed("predict", cmd_predict)
    finally:
        timed("destroy", cmd_destroy)
    p50 = sorted(report.latencies_ms)[len(report.latencies_ms) // 2]
    kept_report = paths.home / "demo-report.png"
    print("\n==> demo summary")
    print(f"test accuracy (in-process)  {report.in_process_accuracy:.4f}")
    print(
        f"test accuracy (HTTP)        {report.accuracy:.4f}  ({report.correct}/{report.samples}, "
        f"{'equal' if report.matches else 'DIFFERENT'})"
    )
    print(f"median latency              {p50:.2f} ms")
    if session := _session(args):
        print(
            "images                      "
            + "  ".join(
                f"{image.ref} ({f'built in {image.seconds:.0f} s' if image.built else 'up to date'})"
                for image in session.images.values()
            )
        )
    print("step seconds                " + "  ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"total                       {sum(timings.values()):.1f} s")
    print(f"report                      {kept_report}")
    if report.accuracy < DEMO_MIN_ACCURACY:
        dataset = "" if paths.dataset_name == DEFAULT_DATASET else f" DATASET={paths.dataset_name}"
        raise OpsError(
            f"test accuracy {report.accuracy:.4f} is below the demo's {DEMO_MIN_ACCURACY}: "
            f'train longer, e.g. make demo{dataset} HP="epochs=40"'
        )


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "deploy": cmd_deploy,
    "predict": cmd_predict,
    "destroy": cmd_destroy,
    "demo": cmd_demo,
    "images": cmd_images,
}
AWS_ONLY = ("preflight", "rollback", "status", "logs")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        default=os.environ.get("TARGET") or "local",
        help="where to run: local (default), container (the images under Docker, see "
        "ops/container.py) or aws (the Pulumi stack, see ops/aws/)",
    )
    parser.add_argument("command", choices=sorted({*COMMANDS, *AWS_ONLY}))
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
    aws.add_argument("--backend", help="train: ecs (default: ECS RunTask on the GPU capacity) or sagemaker")
    aws.add_argument("--max-cost", help="train: dollars at most; lowers the maximum runtime to what they buy")
    aws.add_argument("--max-hours", help="train: maximum runtime in hours (default 24)")
    aws.add_argument("--instance-type", help="train with BACKEND=sagemaker: instance type (default ml.g5.xlarge)")
    aws.add_argument("--resume", help="train: run id whose checkpoints the new run starts from")
    aws.add_argument("--run", help="logs: run id (default: the newest run)")
    aws.add_argument("--endpoint", action="store_true", help="logs: the endpoint's log instead of a run's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.target not in TARGETS:
            raise OpsError(f"TARGET={args.target} is not a target: use local (default), container or aws")
        paths = Paths.from_environ()
        if args.target == "aws":
            from ops import aws

            aws.run(args.command, args, paths, REPO)
        elif args.command in AWS_ONLY:
            raise OpsError(f"`{args.command}` is for TARGET=aws: run make {args.command} TARGET=aws")
        elif args.target == "container":
            args.session = container.Session(paths, REPO)
            try:
                COMMANDS[args.command](paths, args)
            finally:
                args.session.close()
        else:
            COMMANDS[args.command](paths, args)
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
