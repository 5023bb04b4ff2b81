"""Train a classifier on SageMaker's training contract and write a model artifact.

The container runs ``python -m trainer train`` (SageMaker passes ``train``); everything comes from
the SageMaker directory layout under ``SAGEMAKER_BASE_DIR`` (default ``/opt/ml``):
``input/config/hyperparameters.json`` (string values), channels ``input/data/{train,validation,test}``
(or ``SM_CHANNEL_<NAME>``), the model to ``SM_MODEL_DIR``, the report to ``SM_OUTPUT_DATA_DIR``, and on
failure the reason to ``output/failure`` with a non-zero exit.

CPU, on this machine (lays out .deepcloud/local/jobs/<id>/ and runs this module in it)::

    make data train
    make train HP="epochs=10 lr=0.002"

CPU or one GPU, against a layout you made yourself::

    SAGEMAKER_BASE_DIR=/path/to/job python -m trainer train

``device=auto`` (the default) takes the GPU when one is visible. Several GPUs on one machine (DDP)::

    SAGEMAKER_BASE_DIR=/path/to/job torchrun --nproc_per_node=8 -m trainer train

On SageMaker with several hosts (resourceconfig.json or ``SM_HOSTS``) or GPUs (``SM_NUM_GPUS``),
``python -m trainer train`` waits for the other hosts' names to resolve (``DEEPCLOUD_HOST_WAIT_S``, default
900) and re-launches itself under torchrun with the first host as the rendezvous; only the first host
writes the model, the report and the checkpoints (docs/trainer.md, "Several hosts").

Metrics: ``output/data/metrics.jsonl``, ``key=value`` log lines, TensorBoard event files in
``<base>/output/tensorboard`` and, when ``MLFLOW_TRACKING_URI`` is set, an MLflow run (trainer/tracking.py).

Checkpoints go to ``<base>/checkpoints`` (and ``checkpoint_s3_uri``); a restarted job resumes from the
newest valid one. SIGTERM: finish the step, checkpoint, exit 143; SIGUSR1: checkpoint and go on.

On ECS (``make train TARGET=aws``), where nothing writes hyperparameters.json or uploads the model, the
hyperparameters come as the JSON object ``SM_HPS``, the channels as ``SM_CHANNEL_<NAME>=s3://...``, and
``DEEPCLOUD_MODEL_S3_URI`` names where model.tar.gz is uploaded once the manifest is written.

Exit codes: 0 done; 1 failed (reason in output/failure); 2 bad command line; 143 stopped by SIGTERM
after writing a checkpoint (not a failure: no output/failure).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.artifact import (
    MODEL_FILE,
    atomic_write_bytes,
    export_program,
    load_program,
    write_manifest,
)
from trainer.checkpoint import Checkpointing
from trainer.config import TrainConfig
from trainer.data.channels import load_channels
from trainer.data.samples import Split
from trainer.distributed import (
    LaunchConfig,
    Runtime,
    compute_cleanup,
    compute_init,
    launcher_failure,
    peer_lost,
    run_launcher,
    torchrun_command,
    visible_gpus,
    wait_for_hosts,
    worker_environ,
    workers_stopped,
)
from trainer.ecs import MODEL_URI_ENV, checkpoint_uploader, pull_checkpoints, upload_model, upload_tensorboard
from trainer.errors import TrainerError
from trainer.loop import evaluate, train
from trainer.model.build import ModelSpec
from trainer.model.export_check import check_exportable_isolated
from trainer.privileges import drop_privileges, write_file
from trainer.sagemaker_env import Cluster, SageMakerEnv
from trainer.signals import EXIT_STOPPED, StopFlags, Stopped, StopRequested
from trainer.state import History
from trainer.tracking import Tracking

EXPORT_TOLERANCE = 1e-4
"""Largest |eager - exported| logit difference accepted when checking the export."""


@dataclass(frozen=True, slots=True)
class Job:
    """What every step of a run needs: the job's layout, its config, and this process's place in it."""

    env: SageMakerEnv
    cfg: TrainConfig
    runtime: Runtime
    flags: StopFlags

    def say(self, line: str) -> None:
        """Print ``line`` on the first process only: N processes would print every line N times."""
        if self.runtime.is_main:
            print(line, flush=True)


Splits = tuple[Split, Split, Split | None]
"""(train, validation, test); test is None without a test channel."""


def run(env: SageMakerEnv, flags: StopFlags) -> dict[str, Any] | None:
    """The whole job on this process: config, data, model, training, and on rank 0 the artifact and the report.

    Returns rank 0's summary (what metrics.json holds), None on the other ranks."""
    cfg = TrainConfig.load(env.hyperparameters_path)
    job = Job(env, cfg, compute_init(cfg.device, cfg.seed, cfg.deterministic), flags)
    job.say("config " + json.dumps(cfg.to_dict(), sort_keys=True))
    splits = _load_data(job)
    spec = _model_spec(job, splits[0])
    model = _build_checked(job, spec, splits[0])
    ckpt = _checkpointing(job)
    if not job.runtime.is_main:
        train(model, cfg, splits[0], splits[1], job.runtime, ckpt, flags, _metrics_path(env))
        return None
    # Rank 0 only: TensorBoard always, MLflow when MLFLOW_TRACKING_URI is set; closed with the job's outcome
    # (SIGTERM and failures included), and on ECS the event files then go to S3 beside the model.
    tracker = Tracking.open(env.base_dir, cfg.to_dict())
    try:
        with tracker:
            history = train(model, cfg, splits[0], splits[1], job.runtime, ckpt, flags, _metrics_path(env), tracker)
            return _ship(job, model, history, splits, spec, tracker)
    finally:
        if model_uri := os.environ.get(MODEL_URI_ENV):
            upload_tensorboard(env, model_uri)


def _metrics_path(env: SageMakerEnv) -> Path:
    return env.output_data_dir / "metrics.jsonl"


def _load_data(job: Job) -> Splits:
    """The channels, checked to share one image shape, and the one line that sums them up."""
    train_split, val_split, test_split = load_channels(job.env, job.cfg.skip_bad_samples, say=job.say)
    job.say(
        f"data train={len(train_split)} validation={len(val_split)} "
        f"test={len(test_split) if test_split else 0} classes={len(train_split.classes)} "
        f"shape={list(train_split.images.shape[1:])} device={job.runtime.device} world_size={job.runtime.world_size}"
    )
    return train_split, val_split, test_split


def _model_spec(job: Job, train_split: Split) -> ModelSpec:
    """The model the config names, sized for the data, with the per-channel statistics of the training pixels
    that it normalises by (inside the model, so the artifact takes raw pixels)."""
    images = train_split.images
    pixels = images / 255.0
    return ModelSpec(
        name=job.cfg.model,
        in_channels=images.shape[1],
        image_size=(images.shape[2], images.shape[3]),
        num_classes=len(train_split.classes),
        width=job.cfg.width,
        dropout=job.cfg.dropout,
        mean=pixels.mean(dim=(0, 2, 3)).tolist(),
        std=pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist(),
        code_dir=job.env.base_dir / "code",
    )


def _build_checked(job: Job, spec: ModelSpec, train_split: Split) -> nn.Module:
    model = spec.build()
    # Before the first step, on every rank: a model the artifact cannot hold fails now, not after training.
    check_exportable_isolated(spec, train_split.images[:2])
    return model.to(job.runtime.device)


def _checkpointing(job: Job) -> Checkpointing:
    """Where checkpoints go; on ECS with ``checkpoint_s3_uri``, S3's copies are pulled down first."""
    cfg, main = job.cfg, job.runtime.is_main
    ckpt = Checkpointing(
        root=job.env.checkpoint_dir,
        keep=cfg.keep_checkpoints,
        uploader=checkpoint_uploader(cfg.checkpoint_s3_uri) if main else None,
    )
    if cfg.checkpoint_s3_uri and main:  # only rank 0 reads the folder; the others get its checkpoint from it
        pull_checkpoints(cfg.checkpoint_s3_uri, job.env.checkpoint_dir)
    return ckpt


def _ship(
    job: Job, model: nn.Module, history: History, splits: Splits, spec: ModelSpec, tracker: Tracking
) -> dict[str, Any]:
    """Rank 0, after training: the artifact, its manifest, the report and metrics.json, in that order."""
    env, cfg = job.env, job.cfg
    train_split = splits[0]
    metrics = _export_verified(env, model, splits)
    manifest_path = write_manifest(
        env.model_dir,
        input_shape=list(train_split.images.shape[1:]),
        classes=train_split.classes,
        metrics=metrics,
        config=cfg.to_dict(),
        normalization={"mean": spec.mean, "std": spec.std},
    )
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    from trainer.report import write_report  # matplotlib only after training: a lower peak (docs/trainer.md)

    report = write_report(
        history, env.output_data_dir / "report.png", f"{cfg.model} · {len(train_split)} samples · {cfg.epochs} epochs"
    )
    summary = {
        "metrics": metrics,
        "history": history.state_dict(),
        "artifact": str(env.model_dir),
        "manifest": str(manifest_path),
        "report": str(report),
    }
    atomic_write_bytes(env.output_data_dir / "metrics.json", (json.dumps(summary, indent=2) + "\n").encode())
    tracker.final(metrics, step=cfg.epochs)
    tracker.artifacts({"report": report, "metrics": env.output_data_dir / "metrics.json"}, env.model_dir)
    if model_uri := os.environ.get(MODEL_URI_ENV):
        upload_model(env, model_uri)
        summary["model_uri"] = model_uri
    _print_summary(env, metrics, history, report)
    return summary


def _export_verified(env: SageMakerEnv, model: nn.Module, splits: Splits) -> dict[str, dict[str, float]]:
    """Ship exactly what was measured: export, reload, check it matches eager, evaluate the reload."""
    train_split, val_split, test_split = splits
    model = model.cpu()
    env.model_dir.mkdir(parents=True, exist_ok=True)
    model_path = env.model_dir / MODEL_FILE
    export_program(model, train_split.images[:2], model_path)
    exported = load_program(model_path)
    with torch.no_grad():
        probe = val_split.images[:256]
        diff = (model.eval()(probe) - exported(probe)).abs().max().item()
    if diff > EXPORT_TOLERANCE:
        raise TrainerError(f"exported model differs from the trained one by {diff:.2e} (> {EXPORT_TOLERANCE})")
    cpu = torch.device("cpu")
    metrics = {"validation": evaluate(exported, val_split, cpu)}
    if test_split is not None:
        metrics["test"] = evaluate(exported, test_split, cpu)
    return metrics


def _print_summary(env: SageMakerEnv, metrics: dict[str, dict[str, float]], history: History, report: Path) -> None:
    """The closing lines; ``validation_*`` and ``test_*`` are what SageMaker's metric regexes read."""
    val = metrics["validation"]
    print(f"validation_loss={val['loss']:.4f} validation_accuracy={val['accuracy']:.4f}", flush=True)
    if "test" in metrics:
        print(f"test_loss={metrics['test']['loss']:.4f} test_accuracy={metrics['test']['accuracy']:.4f}", flush=True)
    print(f"trained in {history.seconds:.1f}s", flush=True)
    print(f"artifact {env.model_dir}", flush=True)
    print(f"report {report}", flush=True)


def _fail(env: SageMakerEnv, message: str) -> int:
    try:
        write_file(env.base_dir, env.failure_path, (message + "\n").encode())
    except (OSError, TrainerError) as exc:  # e.g. output/ is a link: not followed, as this may still be root
        print(f"error: could not write {env.failure_path}: {exc}", file=sys.stderr)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["train"]):
        print(f"error: unexpected arguments {' '.join(args)!r}: run 'python -m trainer [train]'", file=sys.stderr)
        return 2
    env = SageMakerEnv.from_environ()
    flags = StopFlags().install()
    try:
        drop_privileges(env)
        cluster = env.cluster()
        launch = LaunchConfig.from_environ()
        relaunch = torchrun_command(
            cluster.hosts, cluster.current_host, visible_gpus(), rendezvous_timeout_s=launch.rendezvous_timeout_s
        )
        if relaunch is not None:
            return _relaunch(env, cluster, launch, relaunch, flags)
        run(env, flags)
    except (Stopped, StopRequested) as stop:
        where = f"; checkpoint {stop.path}" if isinstance(stop, Stopped) and stop.path else ""
        print(
            f"stopped on SIGTERM at step {getattr(stop, 'step', 0)}{where}: restart the job to resume",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_STOPPED
    except TrainerError as exc:
        return _fail(env, str(exc))
    except Exception as exc:
        if (lost := peer_lost(exc)) is not None:  # expected when a host dies: the detail, then the one line
            print(f"{type(exc).__name__}: {str(exc).strip()}", file=sys.stderr)
            return _fail(env, lost)
        traceback.print_exc()  # a bug, not a user error: keep the traceback for the log
        return _fail(env, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        compute_cleanup()
    return 0


def _relaunch(env: SageMakerEnv, cluster: Cluster, launch: LaunchConfig, command: list[str], flags: StopFlags) -> int:
    """Run this host's part of a multi-host (or multi-GPU) job under torchrun, and make its end one line.

    The other hosts' names are waited for first (SageMaker may publish them late). torchrun's own report
    of a failure spans pages; it stays in the log, and output/failure gets one line: the one a worker of
    this host wrote (it knows best, e.g. "lost contact with another host"), else a summary of torchrun's.
    """
    if cluster.others:
        wait_for_hosts(cluster.others, launch.host_wait_s, say=lambda line: print(line, flush=True))
    print("launching " + " ".join(command), flush=True)
    before = _identity(env.failure_path)
    stopping: list[bool] = []

    def forward_sigterm(proc) -> None:
        # SageMaker and ECS signal this process (PID 1) only: pass the stop on once, then wait for the workers
        # to checkpoint (torchrun forwards it to them).
        flags.stop = True
        if not stopping:
            stopping.append(True)
            proc.send_signal(signal.SIGTERM)

    flags.in_loop = True
    returncode, tail = run_launcher(
        command,
        {**os.environ, **worker_environ(cluster.network_interface_name)},
        forward_sigterm,
        stop_pending=lambda: flags.stop,
    )
    if returncode == 0:
        return 0
    if flags.stop or workers_stopped(tail, EXIT_STOPPED):
        print("stopped on SIGTERM: restart the job to resume from the newest checkpoint", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    if _identity(env.failure_path) not in (before, None):  # written by a worker of this run: its line stands
        line = env.failure_path.read_text(errors="replace").strip().splitlines()[0]
        print(f"error: {line}", file=sys.stderr, flush=True)
        return 1
    return _fail(env, launcher_failure(returncode, tail, cluster.hosts[0], launch))


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of ``path``, None when absent: tells a failure written by this run from an older one."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


if __name__ == "__main__":
    sys.exit(main())
