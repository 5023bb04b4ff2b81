"""The two images, built by `make images`' own code and run under a real Docker engine the way the platforms run them.

The engine is ops' own dockerd (ops/container/engine.py: no bridge, no iptables, data root in .engine/), started
for the session when none runs and stopped at its end by the pid it recorded; DOCKER_HOST points the tests at
another. Every container runs with --network=host and every server in one binds 127.0.0.1, so all traffic stays
on loopback. Where no engine can start (no dockerd, not root) the tests skip, except in CI (the CI variable is set,
as .ci/run sets it), where they fail: CI must run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.container import engine as container_engine
from ops.container import images as container_images
from ops.container.engine import Engine
from ops.errors import OpsError
from tests.conftest import REPO, make_job
from tests.trainer.conftest import bucket, s3_env  # noqa: F401 - moto's S3 for the ECS test

OWNER = "pytest"

JOB_HP = {"epochs": "10", "seed": "3", "checkpoint_every_steps": "8", "log_every_steps": "1", "keep_checkpoints": "3"}
"""The SageMaker-style job of these tests: 200 steps (1257 training images, batch 64), long enough to stop mid-run."""


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        engine, started = container_engine.ensure(OWNER)
    except OpsError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the container tests must run in CI, but no Docker engine starts: {exc}")
        pytest.skip(f"no Docker engine to run the images: {exc}")
    try:
        yield engine
    finally:
        if started:
            container_engine.stop(owner=OWNER)


@pytest.fixture(scope="session")
def images(engine: Engine) -> dict[str, str]:
    """{name: image reference}: what `make images` builds (built here when the sources changed since)."""
    log: list[str] = []
    try:
        built = container_images.ensure_all(engine, REPO, say=log.append)
    except OpsError as exc:
        pytest.fail(f"building the images failed: {exc}\n" + "\n".join(log[-60:]))
    return {name: image.ref for name, image in built.items()}


class Docker:
    """docker CLI calls against the test engine; every container and volume made through it is removed at the end."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self.engine.argv(*args),
            env={**os.environ, **self.engine.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"docker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done

    def name(self, what: str) -> str:
        """A unique container name, removed at teardown."""
        name = f"deepcloud-test-{what}-{uuid.uuid4().hex[:8]}"
        self.containers.append(name)
        return name

    def volume(self, what: str) -> str:
        """A fresh named volume of the local driver, as ECS creates a task-scoped one."""
        name = f"deepcloud-test-{what}-{uuid.uuid4().hex[:8]}"
        self.volumes.append(name)
        self("volume", "create", "--driver", "local", name)
        return name

    def mountpoint(self, volume: str) -> Path:
        return Path(self("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())

    def exit_code(self, name: str, timeout: float = 300) -> int:
        return int(self("wait", name, timeout=timeout).stdout.strip())

    def logs(self, name: str) -> str:
        done = self("logs", name, check=False)
        return done.stdout + done.stderr

    def state(self, name: str) -> dict:
        return json.loads(self("inspect", "--format", "{{json .State}}", name).stdout)

    def cleanup(self) -> None:
        for name in self.containers:
            self("rm", "--force", name, check=False)
        for volume in self.volumes:
            self("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def docker(engine: Engine) -> Iterator[Docker]:
    runner = Docker(engine)
    try:
        yield runner
    finally:
        runner.cleanup()


def run_sagemaker_job(
    docker: Docker, image: str, base: Path, *args: str, detach: bool = False, timeout: float = 600
) -> tuple[str, subprocess.CompletedProcess]:
    """`docker run <image> train` as SageMaker starts a training container: as root (the image's user), the job
    directory bind-mounted at /opt/ml, nothing else (SageMaker's BYO container contract sets no SM_* variables)."""
    name = docker.name("train")
    done = docker(
        "run",
        *(["--detach"] if detach else []),
        "--name",
        name,
        "--network=host",
        "--volume",
        f"{base}:/opt/ml",
        *args,
        image,
        "train",
        timeout=timeout,
        check=False,
    )
    return name, done


@pytest.fixture(scope="session")
def sagemaker_job(
    engine: Engine, images: dict[str, str], dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One uninterrupted job of JOB_HP in the trainer image; its model is what the server tests serve."""
    base = make_job(tmp_path_factory.mktemp("sagemaker-job") / "ml", dataset, JOB_HP)
    runner = Docker(engine)
    try:
        name, done = run_sagemaker_job(runner, images["trainer"], base)
        assert done.returncode == 0, f"the training container failed:\n{runner.logs(name)[-4000:]}"
    finally:
        runner.cleanup()
    return base
