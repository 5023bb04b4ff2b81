"""TARGET=container: `make demo`'s loop in the two images (ops/container/), and ops' own Docker engine: who starts
it stops it, by the pid it recorded, and an engine named by DOCKER_HOST is never started or stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.container import engine as container_engine
from ops.container.engine import Engine
from ops.errors import OpsError
from tests.conftest import REPO, free_port, port_is_free, processes_mentioning
from tests.container.conftest import Docker

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(900)]


def _ops(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEEPCLOUD_HOME": str(home), "TARGET": "container"}
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path, dataset: Path) -> Path:
    shutil.copytree(dataset, tmp_path / "home" / "data" / "digits")
    return tmp_path / "home"


def test_demo_runs_the_local_loop_in_the_images(
    engine: Engine, images: dict[str, str], home: Path, docker: Docker
) -> None:
    port = free_port()
    result = _ops(home, "demo", "--hp", "epochs=10", "--port", str(port))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for header in (
        "==> train (container)",
        "==> deploy (container)",
        "==> predict",
        "==> destroy (container)",
        "==> demo summary",
    ):
        assert header in out, header
    summary = out[out.index("==> demo summary") :]
    assert "equal)" in summary, summary
    assert f"images                      {images['trainer']} (up to date)  {images['serving']} (up to date)" in summary
    assert f"http://127.0.0.1:{port}/invocations" in out
    assert not (home / "container").exists(), "destroy removes what the container target made"
    assert (home / "demo-report.png").is_file()
    assert port_is_free(port), "the server container is gone"
    assert docker("ps", "--all", "--quiet", "--filter", "name=deepcloud-serving-").stdout.strip() == ""
    assert container_engine.owner_of() == "pytest", "ops leaves an engine it did not start running"


def test_failures_are_one_line(engine: Engine, images: dict[str, str], home: Path) -> None:
    bad = _ops(home, "train", "--hp", "epochs=3 lr=fast")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("error: training job train-")
    assert bad.stderr.strip().endswith(
        f"failed with exit code 1 (its error is above); its folder is {next((home / 'container' / 'jobs').iterdir())}"
    )
    assert bad.stderr.count("hyperparameter 'lr' must be a finite number, got 'fast'") == 1  # said once
    assert "Traceback" not in bad.stderr
    nothing = _ops(home, "predict")
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == "error: nothing is deployed: run `make deploy TARGET=container` first"
    assert _ops(home, "destroy").stdout.strip().splitlines()[-1] in (
        "nothing to destroy",
        f"removed {home / 'container'}",
    )


def test_ops_engine_is_stopped_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine
) -> None:
    folder = tmp_path / "engine"
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    second, started = container_engine.ensure("test-owner", folder=folder)
    try:
        assert started
        assert second.own
        assert second.host != engine.host
        assert second.run("info", "--format", "{{.ServerVersion}}").stdout.strip() == second.version
        networks = second.run("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert sorted(networks) == ["host", "none"], f"--bridge=none: no network of the engine's own, {networks}"
        assert container_engine.ensure("another", folder=folder) == (second, False), "found running, not started"
        assert not container_engine.stop(owner="another", folder=folder), "only the owner stops it"
        assert container_engine.running(folder) is not None
    finally:
        assert container_engine.stop(owner="test-owner", folder=folder)
    assert container_engine.running(folder) is None
    assert processes_mentioning(str(folder / "data")) == [], "dockerd (and its containerd) are gone"
    run_dir = str(Path(second.host.removeprefix("unix://")).parent)
    assert [m for m in Path("/proc/mounts").read_text().splitlines() if run_dir in m] == [], "a mount left behind"
    assert not Path(run_dir).exists(), "the engine's run folder is left behind"

    monkeypatch.setenv("DOCKER_HOST", engine.host)
    external, started = container_engine.ensure("test-owner", folder=folder)
    assert (external.own, started, external.host) == (False, False, engine.host), "DOCKER_HOST's engine, as it is"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nothing.sock'}")
    with pytest.raises(OpsError, match=r"^no Docker engine answers at DOCKER_HOST="):
        container_engine.ensure("test-owner", folder=folder)
