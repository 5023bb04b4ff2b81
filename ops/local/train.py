"""`make train` on the local target: lay out a SageMaker training job and run the trainer in it.

The job directory is exactly what SageMaker gives a bring-your-own container under /opt/ml, so the
trainer runs here on the code path it runs in the image::

    .deepcloud/local/jobs/<job-id>/
        input/config/hyperparameters.json    {"epochs": "30", ...}   all values strings
        input/config/inputdataconfig.json    one entry per channel
        input/config/resourceconfig.json     {"current_host": "algo-1", "hosts": ["algo-1"]}
        input/data/<channel>/                a copy of the dataset's channel (File mode)
        model/  output/  output/data/  checkpoints/
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ops.data import DEFAULT_DATASET
from ops.errors import OpsError
from ops.paths import Paths
from ops.revision import revision
from trainer.archive import pack_model  # the one packer: standard library only, no torch

CHANNELS = ("train", "validation", "test")


@dataclass(frozen=True, slots=True)
class TrainResult:
    job_dir: Path
    model_dir: Path
    archive: Path
    report: Path
    metrics: dict


def new_job_id() -> str:
    # Sortable by time, unique within the second: `latest` is the lexicographic maximum.
    return f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def layout_job(paths: Paths, dataset: Path, hyperparameters: dict[str, str]) -> Path:
    if not (dataset / "train").is_dir():
        named = "" if paths.dataset_name == DEFAULT_DATASET else f" DATASET={paths.dataset_name}"
        raise OpsError(f"no dataset at {dataset}: run `make data{named}` first")
    job = paths.jobs / new_job_id()
    config = job / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2) + "\n")
    channels = [c for c in CHANNELS if (dataset / c).is_dir()]
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                c: {
                    "ContentType": "application/x-image",
                    "TrainingInputMode": "File",
                    "S3DistributionType": "FullyReplicated",
                    "RecordWrapperType": "None",
                }
                for c in channels
            },
            indent=2,
        )
        + "\n"
    )
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}) + "\n"
    )
    for channel in channels:
        _link_tree(dataset / channel, job / "input" / "data" / channel)
    for sub in ("model", "output/data", "checkpoints"):
        (job / sub).mkdir(parents=True)
    return job


def _link_tree(source: Path, dest: Path) -> None:
    """A channel as SageMaker lays it out, its files hard-linked (no second copy of the dataset per job; the
    trainer only reads them), copied where links cannot be made (another filesystem)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link)


def run_training(paths: Paths, dataset: Path, hyperparameters: dict[str, str], repo: Path) -> TrainResult:
    job = layout_job(paths, dataset, hyperparameters)
    print(f"job {job.name}: {job}", flush=True)
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(job),
        "TRAINING_JOB_NAME": job.name,
        "DEEPCLOUD_GIT_REVISION": revision(repo),
    }
    # Exactly the container's command; stdio is inherited so the progress bar sees the terminal.
    code = subprocess.run([sys.executable, "-m", "trainer", "train"], cwd=repo, env=env, check=False).returncode
    return finish_job(job, code)


def finish_job(job: Path, code: int) -> TrainResult:
    """After the trainer exited with ``code``: its failure as an OpsError, or the model, packed as SageMaker would."""
    failure = job / "output" / "failure"
    if code != 0:
        # The trainer said why on stderr already (and in output/failure): say where, not the reason again.
        said = "its error is above" if failure.exists() else "no output/failure written"
        raise OpsError(f"training job {job.name} failed with exit code {code} ({said}); its folder is {job}")
    model_dir = job / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    archive = pack_model(model_dir, job / "output" / "model.tar.gz")
    return TrainResult(
        job_dir=job,
        model_dir=model_dir,
        archive=archive,
        report=job / "output" / "data" / "report.png",
        metrics=manifest["metrics"],
    )


def latest_model(paths: Paths, target: str = "local") -> Path:
    """The newest job's model directory that holds a manifest (the trainer writes it last)."""
    jobs = sorted(paths.jobs.glob("train-*/model/manifest.json")) if paths.jobs.is_dir() else []
    if not jobs:
        train = "make train" if target == "local" else f"make train TARGET={target}"
        raise OpsError(f"no trained model found: run `{train}` first")
    return jobs[-1].parent
