"""TARGET=container: the local loop in the two images, each run the way SageMaker runs it, under Docker.

    train    lays out .deepcloud/container/jobs/<id>/ as `make train` does for local, then
             docker run --rm --network=host -v <job>:/opt/ml deepcloud-trainer:<digest> train
             as root, as SageMaker starts it: the trainer hands the layout to uid 10001 and drops to it. When make
             runs as another user than root, DEEPCLOUD_RUN_AS is that user's uid:gid, so the job stays theirs.
    deploy   docker run --detach --network=host -v <model>:/opt/ml/model:ro -e DEEPCLOUD_BIND_HOST=127.0.0.1
                 -e SAGEMAKER_BIND_TO_PORT=<port> deepcloud-serving:<digest> serve
             and returns once GET /ping answers 200 (SageMaker allows 4 minutes).
    predict  as for local, against http://127.0.0.1:<port>.
    destroy  docker stop -t 30 (SageMaker's grace period) and docker rm the server, remove .deepcloud/container.

Both images are built first when their sources changed (images.py, the build `make train|deploy
TARGET=aws` runs too). The containers share the host's network, and the server binds 127.0.0.1 only: nothing
listens beyond loopback. The engine is ops' own dockerd unless DOCKER_HOST names another
(engine.py); ops stops its own at the end of a command when it started it and no container runs,
so a deployed server keeps it until `make destroy`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.container import engine as container_engine
from ops.container import images as container_images
from ops.container.build import IMAGES
from ops.container.engine import Engine
from ops.errors import OpsError
from ops.local.server import READY_TIMEOUT_S, ping, read_state
from ops.local.train import TrainResult, finish_job, layout_job
from ops.paths import Paths
from ops.revision import revision

OWNER = "ops"
"""How ops records itself as the starter of its own engine (the test session records another name)."""
READY_LIMIT_S = 240.0
"""SageMaker's limit for a new endpoint's container to answer /ping with 200."""
STOP_GRACE_S = 30
"""SageMaker's grace period between SIGTERM and SIGKILL for hosting containers."""
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ContainerPaths(Paths):
    """The same layout as the local target's, under .deepcloud/container instead of .deepcloud/local."""

    @property
    def local(self) -> Path:
        """Everything the container target created; `make destroy TARGET=container` removes it."""
        return self.home / "container"


@dataclass(frozen=True, slots=True)
class Deployment:
    container: str
    image: str
    host: str
    port: int
    model_dir: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Session:
    """One ops command's engine and images, made when first needed; `close` stops an engine ops started."""

    def __init__(self, paths: Paths, repo: Path) -> None:
        self.paths = ContainerPaths(paths.home, paths.dataset_name)
        self.repo = repo
        self.images: dict[str, container_images.LocalImage] = {}
        """The images this command used, by name."""
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine, started = container_engine.ensure(OWNER)
            if started:
                print(f"started ops' Docker engine (dockerd {self._engine.version}, {self._engine.host})", flush=True)
        return self._engine

    def image(self, name: str, force: bool = False) -> container_images.LocalImage:
        image = container_images.ensure(self.engine, self.repo, IMAGES[name], say=_say, force=force)
        if image.built:
            _say(f"built {image.ref} in {image.seconds:.0f} s")
        self.images[name] = image
        return image

    def close(self) -> None:
        """Stop ops' own engine when ops started it and no container of anyone's runs in it."""
        if self._engine is None or not self._engine.own or container_engine.owner_of() != OWNER:
            return
        if self._engine.run("ps", "--quiet", check=False).stdout.strip():
            return
        if container_engine.stop(owner=OWNER):
            print("stopped ops' Docker engine", flush=True)


def _say(text: str) -> None:
    print(text, flush=True)


def _server_name(paths: Paths) -> str:
    """One server per DEEPCLOUD_HOME, named after it."""
    return f"deepcloud-serving-{hashlib.sha256(str(paths.home).encode()).hexdigest()[:8]}"


def _state_file(paths: Paths) -> Path:
    return paths.server / "server.json"


def train(session: Session, dataset: Path, hyperparameters: dict[str, str]) -> TrainResult:
    image = session.image("trainer")
    job = layout_job(session.paths, dataset, hyperparameters)
    print(f"job {job.name}: {job} (in {image.ref})", flush=True)
    run_as = [] if os.geteuid() == 0 else ["--env", f"DEEPCLOUD_RUN_AS={os.getuid()}:{os.getgid()}"]
    argv = session.engine.argv(
        "run",
        "--rm",
        "--name",
        f"deepcloud-{job.name}",
        "--network=host",
        "--volume",
        f"{job}:/opt/ml",
        "--env",
        f"TRAINING_JOB_NAME={job.name}",
        "--env",
        f"DEEPCLOUD_GIT_REVISION={revision(session.repo)}",
        *run_as,
        image.ref,
        "train",
    )
    # Exactly SageMaker's command; the container's output goes straight to this terminal, as for local.
    code = subprocess.run(argv, env={**os.environ, **session.engine.env}, check=False).returncode
    return finish_job(job, code)


def read_deployment(paths: Paths) -> Deployment | None:
    paths = ContainerPaths(paths.home, paths.dataset_name)
    return read_state(_state_file(paths), Deployment, paths.local)


def _model_mount(model: Path) -> str:
    """A model directory at /opt/ml/model, or a model.tar.gz in it (the server unpacks it into /tmp)."""
    if model.is_dir():
        return f"{model}:/opt/ml/model:ro"
    if model.is_file() and model.name.endswith(".tar.gz"):
        return f"{model}:/opt/ml/model/model.tar.gz:ro"
    raise OpsError(f"{model} is neither a model directory nor a model.tar.gz")


def deploy(session: Session, model: Path, port: int = 8080) -> Deployment:
    """Start the server container and return once GET /ping answers 200."""
    if read_deployment(session.paths) is not None:
        print("replacing the running deployment", flush=True)
        stop(session)
    image = session.image("serving")
    name = _server_name(session.paths)
    engine = session.engine
    engine.run("rm", "--force", name, check=False)  # a container of an earlier deploy that failed half-way
    engine.run(
        "run",
        "--detach",
        "--name",
        name,
        "--network=host",
        "--volume",
        _model_mount(model),
        "--env",
        f"DEEPCLOUD_BIND_HOST={HOST}",
        "--env",
        f"SAGEMAKER_BIND_TO_PORT={port}",
        image.ref,
        "serve",
    )
    deployment = Deployment(container=name, image=image.ref, host=HOST, port=port, model_dir=str(model))
    deadline = time.monotonic() + max(READY_TIMEOUT_S, READY_LIMIT_S)
    while time.monotonic() < deadline:
        if engine.run("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip() != "true":
            reason = _last_error(engine, name)
            engine.run("rm", "--force", name, check=False)
            raise OpsError(f"server container exited ({reason})")
        if ping(HOST, port, timeout=2.0) == 200:
            session.paths.server.mkdir(parents=True, exist_ok=True)
            tmp = _state_file(session.paths).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(deployment), indent=2) + "\n")
            os.replace(tmp, _state_file(session.paths))
            return deployment
        time.sleep(0.2)
    reason = _last_error(engine, name)
    engine.run("rm", "--force", name, check=False)
    raise OpsError(f"server container did not answer /ping with 200 within {READY_LIMIT_S:.0f} s: {reason}")


def _last_error(engine: Engine, name: str) -> str:
    done = engine.run("logs", "--tail", "200", name, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error: ")


def stop(session: Session) -> Deployment | None:
    """Stop and remove the server container: SIGTERM, and SIGKILL after SageMaker's 30 s."""
    deployment = read_deployment(session.paths)
    if deployment is not None:
        engine = session.engine
        engine.run("stop", "--time", str(STOP_GRACE_S), deployment.container, timeout=STOP_GRACE_S + 60, check=False)
        engine.run("rm", "--force", deployment.container, check=False)
        _state_file(session.paths).unlink(missing_ok=True)
    return deployment


def destroy(session: Session) -> list[str]:
    """Stop the server and remove everything the container target created. Idempotent."""
    done = []
    deployment = stop(session)
    if deployment is not None:
        done.append(f"stopped server container {deployment.container} on {deployment.url}")
    if session.paths.local.exists():
        shutil.rmtree(session.paths.local)
        done.append(f"removed {session.paths.local}")
    return done


def build_images(session: Session) -> dict[str, container_images.LocalImage]:
    """`make images`: both images, built (BuildKit's cache makes an unchanged build quick)."""
    built = {name: session.image(name, force=True) for name in IMAGES}
    for image in built.values():
        size = container_images.image_size(session.engine, image.ref)
        print(f"{image.name:8} {image.ref}  {size / 1e9:.2f} GB  built in {image.seconds:.0f} s", flush=True)
    return built
