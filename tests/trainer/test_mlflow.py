"""MLflow against a real `mlflow server` on 127.0.0.1 (sqlite store, local artifacts; tests/trainer/mlflow_server.py),
read back through MLflow's own client; and a tracking server that is not there, which must cost the run nothing
but one warning line and a few seconds."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PYTHON, REPO, free_port, make_job, run_trainer, stop_trainer_at_step
from tests.trainer import mlflow_server as server
from trainer.tracking import EPOCH_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """The URL of a real tracking server for this module's tests (tests/conftest.py starts making its venv early)."""
    with server.running(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def _env(url: str, experiment: str, job: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": experiment, "TRAINING_JOB_NAME": job}


def _epochs(base: Path) -> list[dict]:
    lines = (base / "output" / "data" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "epoch"]


def _the_run(client: MlflowClient, experiment: str, job: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    runs = client.search_runs([found.experiment_id])
    assert [r.info.run_name for r in runs] == [job], "one run, named after the job"
    return runs[0]


def _assert_epoch_history(client: MlflowClient, run_id: str, base: Path) -> None:
    epochs = _epochs(base)
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in EPOCH_KEYS:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == [(r["epoch"], r[key]) for r in epochs], key


def test_a_run_is_logged_and_reads_back_through_mlflow_client(
    mlflow_server: str, tmp_path: Path, dataset: Path
) -> None:
    experiment, job = f"exp-{uuid.uuid4().hex[:8]}", "train-job-1"
    base = make_job(tmp_path / "job", dataset, {"epochs": "2", "seed": "4", "log_every_steps": "10"})
    result = run_trainer(base, env=_env(mlflow_server, experiment, job))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr

    client = MlflowClient(tracking_uri=mlflow_server)
    run = _the_run(client, experiment, job)
    assert run.info.status == "FINISHED"
    manifest = json.loads((base / "model" / "manifest.json").read_text())
    assert run.data.params == {key: str(value) for key, value in manifest["training"]["config"].items()}
    _assert_epoch_history(client, run.info.run_id, base)
    test = json.loads((base / "output" / "data" / "metrics.json").read_text())["metrics"]["test"]
    assert run.data.metrics["test_loss"] == test["loss"]
    assert run.data.metrics["test_accuracy"] == test["accuracy"]

    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["metrics.json", "model", "report.png"]
    fetched = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "fetched")))
    assert (fetched / "report.png").read_bytes() == (base / "output" / "data" / "report.png").read_bytes()
    local_model = {p.name: p.read_bytes() for p in (base / "model").iterdir()}
    assert set(local_model) >= {"model.pt2", "manifest.json"}
    assert {p.name: p.read_bytes() for p in (fetched / "model").iterdir()} == local_model


def test_a_job_stopped_by_sigterm_goes_on_in_the_same_run(mlflow_server: str, tmp_path: Path, dataset: Path) -> None:
    experiment, job = f"exp-{uuid.uuid4().hex[:8]}", "train-job-stopped"
    env = _env(mlflow_server, experiment, job)
    base = make_job(
        tmp_path / "job",
        dataset,
        {"epochs": "2", "seed": "5", "log_every_steps": "1", "checkpoint_every_steps": "1000"},
        channels=("train", "validation"),
    )
    stopped_run = stop_trainer_at_step(base, 25, env)  # into the second epoch: epoch 1 is logged
    assert stopped_run.returncode == 143, stopped_run.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    stopped = _the_run(client, experiment, job)
    assert stopped.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train_loss")] == [1]

    resumed = run_trainer(base, env=env)
    assert resumed.returncode == 0, resumed.stderr
    run = _the_run(client, experiment, job)
    assert run.info.run_id == stopped.info.run_id
    assert run.info.status == "FINISHED"
    _assert_epoch_history(client, run.info.run_id, base)  # each epoch once, from both processes


def test_an_unreachable_tracking_server_costs_one_warning_line_and_a_few_seconds(tmp_path: Path, dataset: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"})
    result = run_trainer(base, env=_env(url, "unreachable", "job-without-mlflow"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"warning: MLflow: cannot connect to {url} ("), lines[0]
    assert lines[0].endswith("the job goes on without MLflow")
    assert (base / "model" / "model.pt2").is_file()
    assert json.loads((base / "model" / "manifest.json").read_text())["metrics"]["validation"]["accuracy"] > 0.5

    # The client's retries are bounded (trainer/tracking.py MLFLOW_CLIENT_DEFAULTS): its defaults would retry
    # for minutes. Timed alone, in a fresh interpreter, so that the environment defaults apply as in a job.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    alone = subprocess.run(
        [PYTHON, "-c", f"from trainer.tracking import MLflow; MLflow({url!r}, 'e', 'n', {{}})"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    seconds = time.monotonic() - started
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr.count("warning: MLflow:") == 1
    assert seconds < 30, f"a refused tracking server cost {seconds:.0f}s"
