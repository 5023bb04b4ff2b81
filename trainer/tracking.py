"""Metrics where users already look: TensorBoard event files, always, and MLflow when it is configured.

:class:`Tracking` is what the loop and ``run`` talk to: every ``metrics.jsonl`` record goes to
:meth:`Tracking.record`, the test metrics to :meth:`Tracking.final`, the report and the model to
:meth:`Tracking.artifacts`, and it is closed (flushed, the MLflow run ended) when the job ends, whether it
finished, stopped on SIGTERM or failed. Only global rank 0 makes one; other ranks pass ``None``.

TensorBoard: ``<base>/output/tensorboard``, where SageMaker's ``TensorBoardOutputConfig.LocalPath`` points by
default and from where it syncs the files to S3 (botocore's SageMaker model, shape ``TensorBoardOutputConfig``:
"Defaults to /opt/ml/output/tensorboard"). Written with ``torch.utils.tensorboard.SummaryWriter``, which uses
the ``tensorboard`` package's protos and record writer; no TensorFlow. Tags:

- ``train/loss``, ``train/lr`` at the optimizer step, every ``log_every_steps`` (the ``step`` records);
- ``epoch/train_loss``, ``epoch/train_accuracy``, ``epoch/validation_loss``, ``epoch/validation_accuracy`` at
  the epoch number, 1-based (the ``epoch`` records);
- ``test/loss``, ``test/accuracy`` of the exported model at the last epoch's number, when there is a test channel.

MLflow (``MLFLOW_TRACKING_URI`` set; otherwise nothing of MLflow is imported): the config as parameters, the
``epoch`` records as metrics with step = epoch, ``test_loss``/``test_accuracy``, then ``report.png``,
``metrics.json`` and the model folder (``model/``). A tracking server that is down or refuses costs one warning
line and nothing else: the run goes on and writes its model without MLflow.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.signals import Stopped, StopRequested

EPOCH_KEYS = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
"""The per-epoch values of an ``epoch`` record, in metrics.jsonl, TensorBoard (``epoch/<key>``) and MLflow."""

FLUSH_SECONDS = 30
"""How often the event writer's thread flushes to disk; close() flushes the rest (SIGTERM, failure, end)."""

DEFAULT_EXPERIMENT = "deepcloud"
"""MLflow experiment when ``MLFLOW_EXPERIMENT_NAME`` is not set."""

MLFLOW_CLIENT_DEFAULTS = {
    # The client's documented knobs (mlflow/environment_variables.py): by default 7 retries with backoff
    # factor 2 and a 120 s timeout per request, minutes against a dead server. A job's own environment wins.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def tensorboard_dir(base_dir: Path) -> Path:
    """``<SAGEMAKER_BASE_DIR>/output/tensorboard``, SageMaker's default TensorBoardOutputConfig.LocalPath."""
    return base_dir / "output" / "tensorboard"


def tensorboard_uri(model_uri: str) -> str:
    """Where the event files go on S3 when nothing syncs them (ECS): beside the model,
    ``s3://b/models/<run>/model.tar.gz`` -> ``s3://b/models/<run>/tensorboard/``."""
    return model_uri.rsplit("/", 1)[0] + "/tensorboard/"


def run_name(base_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``TRAINING_JOB_NAME``, which SageMaker sets in training containers (sagemaker-training-toolkit's
    ``params.TRAINING_JOB_ENV``) and ops sets locally and on ECS; else the job folder's name."""
    env = os.environ if environ is None else environ
    return env.get("TRAINING_JOB_NAME") or base_dir.resolve().name


class TensorBoard:
    """Scalars to event files. The writer is made at the first scalar, so a resume knows its purge step."""

    def __init__(self, logdir: Path) -> None:
        # Imported now, not at the first step: its import takes a third of a second, which would count as step time.
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        self._make = SummaryWriter
        self._writer: Any = None
        self._purge: int | None = None

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            # purge_step: after a crash and a resume from step N, the older files' events past N are the
            # replayed steps; TensorBoard hides them (SummaryWriter's documented purge_step).
            self._writer = self._make(log_dir=str(self.logdir), purge_step=self._purge, flush_secs=FLUSH_SECONDS)
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def record(self, kind: str, values: Mapping[str, Any]) -> None:
        if kind == "resumed" and self._writer is None:
            self._purge = int(values["step"]) + 1
        elif kind == "step":
            self._scalars({"train/loss": values["loss"], "train/lr": values["lr"]}, values["step"])
        elif kind == "epoch":
            self._scalars({f"epoch/{key}": values[key] for key in EPOCH_KEYS}, values["epoch"])

    def final(self, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
        if "test" in metrics:
            self._scalars({f"test/{key}": value for key, value in metrics["test"].items()}, step)

    def artifacts(self, files: Mapping[str, Path], model_dir: Path) -> None:
        pass

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()  # flushes every pending event; what is on disk is whole records


class MLflow:
    """One MLflow run, named after the job, reused when a stopped job of that name resumes.

    Every call to the server goes through :meth:`_call`: the first failure prints one warning line and turns
    this sink off for the rest of the job, so a dead server costs one request's retries, once.
    """

    def __init__(self, uri: str, experiment: str, name: str, params: Mapping[str, Any]) -> None:
        self.uri, self.name = uri, name
        self.run_id: str | None = None
        self.client: Any = None
        self._call("connect to", lambda: self._start(experiment, params))

    def _start(self, experiment: str, params: Mapping[str, Any]) -> None:
        for key, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if not self.uri.startswith("arn:"):
            # sagemaker-mlflow's header provider claims every request and fails on a tracking URI that is not
            # an ARN (sagemaker_mlflow/mlflow_sagemaker_request_header_provider.py: in_context() is always True,
            # set_arn splits the URI on ':'); MLflow's registry logs that as a warning per request and goes on
            # without the header, which only a SageMaker server needs.
            logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)
        client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        quoted = self.name.replace("\\", "\\\\").replace("'", "\\'")
        earlier = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.run_name = '{quoted}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if earlier and earlier[0].info.status != "FINISHED":  # a job resumed after SIGTERM goes on in its run
            run = earlier[0]
            client.update_run(run.info.run_id, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=self.name)
        logged = run.data.params
        # A resume may change a field that changes no number (log_every_steps, ...); MLflow refuses to change
        # a logged parameter, so the first value stays.
        todo = [Param(key, str(value)) for key, value in params.items() if key not in logged]
        for start in range(0, len(todo), 100):  # log_batch takes at most 100 parameters per request
            client.log_batch(run.info.run_id, params=todo[start : start + 100])
        self.client, self.run_id = client, run.info.run_id

    def _call(self, action: str, fn) -> None:
        if action != "connect to" and self.run_id is None:
            return
        try:
            fn()
        except Exception as exc:  # any failure of tracking (network, server, auth) must leave training alone
            detail = " ".join(str(exc).split())[:300]
            print(
                f"warning: MLflow: cannot {action} {self.uri} ({type(exc).__name__}: {detail}); "
                "the job goes on without MLflow",
                file=sys.stderr,
                flush=True,
            )
            self.run_id = None

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def record(self, kind: str, values: Mapping[str, Any]) -> None:
        if kind == "epoch":
            self._call("log metrics to", lambda: self._metrics({k: values[k] for k in EPOCH_KEYS}, values["epoch"]))

    def final(self, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
        if "test" in metrics:
            test = {f"test_{key}": value for key, value in metrics["test"].items()}
            self._call("log metrics to", lambda: self._metrics(test, step))

    def artifacts(self, files: Mapping[str, Path], model_dir: Path) -> None:
        def upload() -> None:
            for path in files.values():
                self.client.log_artifact(self.run_id, str(path))
            self.client.log_artifacts(self.run_id, str(model_dir), artifact_path="model")

        self._call("upload artifacts to", upload)

    def close(self, status: str) -> None:
        self._call("end the run on", lambda: self.client.set_terminated(self.run_id, status=status))


class Tracking:
    """The sinks of one job's rank 0, behind one small interface; a context manager that ends them with the
    job's outcome: FINISHED, KILLED (stopped on SIGTERM) or FAILED."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self.closed = False

    @classmethod
    def open(cls, base_dir: Path, config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Tracking:
        env = os.environ if environ is None else environ
        sinks: list[Any] = [TensorBoard(tensorboard_dir(base_dir))]
        if uri := env.get("MLFLOW_TRACKING_URI"):
            sinks.append(
                MLflow(uri, env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT, run_name(base_dir, env), config)
            )
        return cls(sinks)

    def record(self, kind: str, values: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.record(kind, values)

    def final(self, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
        for sink in self.sinks:
            sink.final(metrics, step)

    def artifacts(self, files: Mapping[str, Path], model_dir: Path) -> None:
        for sink in self.sinks:
            sink.artifacts(files, model_dir)

    def close(self, status: str = "FINISHED") -> None:
        if self.closed:
            return
        self.closed = True
        for sink in self.sinks:
            sink.close(status)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(exc_type, (Stopped, StopRequested)) else "FAILED")
