"""TARGET=local's commands: the trainer and the server as processes on this machine.

    data      the demo dataset as PNG channels in .deepcloud/data/<DATASET>/ (ops/data.py)
    train     a SageMaker-layout job under .deepcloud/local/jobs/<id>/ (train.py)
    deploy    the server on 127.0.0.1:<port> with the latest artifact, once /ping is 200 (server.py)
    predict   the test images through the endpoint: accuracy and latency (predict.py)
    destroy   stop the server, remove .deepcloud/local (the dataset is kept)
    demo      all of the above in order, destroy always last, and a summary

TARGET=container runs the same commands with the trainer and the server in their images (ops/container/cli.py
subclasses :class:`LocalTarget`), so the demo and its summary are written once.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from ops import data, hyperparameters
from ops.errors import OpsError
from ops.local import server
from ops.local.train import TrainResult, latest_model, run_training
from ops.paths import Paths
from ops.predict import PredictReport, run_predictions

COMMANDS = ("data", "train", "deploy", "predict", "destroy", "demo", "images")
DEMO_MIN_ACCURACY = 0.95
"""The demo's promise: the model trained on the dataset reaches this test accuracy (digits and mnist alike)."""
_T = TypeVar("_T")


class Served(Protocol):
    """What `predict` needs of a deployment, whichever target made it."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def model_dir(self) -> str: ...

    @property
    def url(self) -> str: ...


def header(text: str) -> None:
    print(f"==> {text}", flush=True)


class LocalTarget:
    """One command's worth of the local target: ``run(command, args)`` calls the method of that name."""

    name = "local"

    def __init__(self, paths: Paths, repo: Path) -> None:
        self.paths = paths
        self.repo = repo

    def run(self, command: str, args: argparse.Namespace) -> object:
        if command not in COMMANDS:
            raise OpsError(f"`{command}` is for TARGET=aws: run make {command} TARGET=aws")
        method: Callable[[argparse.Namespace], object] = getattr(self, command)
        return method(args)

    @property
    def make_target(self) -> str:
        """How a hint names this target on a make command line ("" for the default, local)."""
        return "" if self.name == "local" else f" TARGET={self.name}"

    def data(self, args: argparse.Namespace) -> dict[str, int]:
        paths = self.paths
        dataset = data.dataset_named(paths.dataset_name)
        header(f"data: {dataset.name} ({dataset.source}) -> {paths.dataset}")
        if data.dataset_is_complete(paths.dataset):
            print(f"reusing the dataset already at {paths.dataset} (delete the folder to write it again)", flush=True)
        sizes = data.prepare(dataset, paths.dataset)
        print("splits " + " ".join(f"{k}={v}" for k, v in sizes.items()), flush=True)
        return sizes

    def train(self, args: argparse.Namespace) -> TrainResult:
        header(f"train ({self.name})")
        result = self._train(hyperparameters.resolve(self.paths.dataset_name, args.hp))
        # The trainer printed its metrics, artifact and report already, as paths inside the job (these paths here,
        # /opt/ml/... in a container): add only what it could not say.
        print(f"packed {result.archive}", flush=True)
        return result

    def _train(self, hyperparameters: dict[str, str]) -> TrainResult:
        return run_training(self.paths, self.paths.dataset, hyperparameters, self.repo)

    def latest_model(self) -> Path:
        return latest_model(self.paths)

    def deploy(self, args: argparse.Namespace) -> Served:
        model = Path(args.model) if args.model else self.latest_model()
        header(f"deploy ({self.name}): {model}")
        return self._deploy(model, args.port)

    def _deploy(self, model: Path, port: int) -> Served:
        deployment = server.deploy(self.paths, model, self.repo, port=port)
        print(f"serving {deployment.url}/invocations  pid {deployment.pid}  log {deployment.log}", flush=True)
        return deployment

    def read_deployment(self) -> Served | None:
        return server.read_deployment(self.paths)

    def predict(self, args: argparse.Namespace) -> PredictReport:
        deployment = self.read_deployment()
        if deployment is None:
            raise OpsError(f"nothing is deployed: run `make deploy{self.make_target}` first")
        test = self.paths.dataset / "test"
        header(f"predict: {test} -> {deployment.url}/invocations")
        report = run_predictions(deployment.host, deployment.port, test, Path(deployment.model_dir))
        for line in report.lines():
            print(line)
        if report.in_process_accuracy is not None and not report.matches:
            raise OpsError(
                "accuracy over HTTP differs from the in-process accuracy of the same artifact: "
                "the server and trainer disagree on the model's input; see docs/artifact.md"
            )
        return report

    def destroy(self, args: argparse.Namespace) -> list[str]:
        header(f"destroy ({self.name})")
        done = self._destroy()
        print("\n".join(done) if done else "nothing to destroy", flush=True)
        return done

    def _destroy(self) -> list[str]:
        return server.destroy(self.paths)

    def images(self, args: argparse.Namespace) -> object:
        raise OpsError("`images` builds the images here: run make images (TARGET=aws builds and pushes them itself)")

    def summary_lines(self) -> list[str]:
        """What the demo's summary adds for this target (the container target: its images)."""
        return []

    def demo(self, args: argparse.Namespace) -> None:
        timings: dict[str, float] = {}

        def timed(name: str, step: Callable[[argparse.Namespace], _T]) -> _T:
            t0 = time.perf_counter()
            try:
                return step(args)
            finally:
                timings[name] = time.perf_counter() - t0

        kept_report = self.paths.home / "demo-report.png"
        try:
            timed("data", self.data)
            trained = timed("train", self.train)
            shutil.copyfile(trained.report, kept_report)  # destroy removes the job
            args.model = str(trained.model_dir)
            timed("deploy", self.deploy)
            report = timed("predict", self.predict)
        finally:
            timed("destroy", self.destroy)
        self._summary(report, timings, kept_report)

    def _summary(self, report: PredictReport, timings: dict[str, float], kept_report: Path) -> None:
        p50 = sorted(report.latencies_ms)[len(report.latencies_ms) // 2]
        print("\n==> demo summary")
        print(f"test accuracy (in-process)  {report.in_process_accuracy:.4f}")
        print(
            f"test accuracy (HTTP)        {report.accuracy:.4f}  ({report.correct}/{report.samples}, "
            f"{'equal' if report.matches else 'DIFFERENT'})"
        )
        print(f"median latency              {p50:.2f} ms")
        for line in self.summary_lines():
            print(line)
        print("step seconds                " + "  ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        print(f"total                       {sum(timings.values()):.1f} s")
        print(f"report                      {kept_report}")
        if report.accuracy < DEMO_MIN_ACCURACY:
            dataset = "" if self.paths.dataset_name == data.DEFAULT_DATASET else f" DATASET={self.paths.dataset_name}"
            raise OpsError(
                f"test accuracy {report.accuracy:.4f} is below the demo's {DEMO_MIN_ACCURACY}: "
                f'train longer, e.g. make demo{dataset} HP="epochs=40"'
            )
