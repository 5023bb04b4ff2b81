"""The trainer image as ECS runs it for `make train TARGET=aws` (BACKEND=ecs): the container definition of the task
definition infra/ registers (synthesized here under Pulumi's mocks, tests/infra/harness.py), turned into the
`docker run` the ECS agent makes of it, with the overrides ops/aws/training/ecs.py sends.

How the agent runs a container definition (amazon-ecs-agent, agent/api/task/task.go): a task-scoped volume of the
local driver is created fresh for the task and mounted through HostConfig.Binds as `<volume>:<containerPath>`
(dockerHostBinds), so Docker's own rules apply: moby creates the volume's folder root-owned with mode 0755
(volume/local/local.go, MkdirAllAndChown(path, 0755, root)) and, on the first mount of an empty volume, copies in
what the image has at that path with its owner and mode (daemon/volumes_unix.go copyExistingContents and
copyOwnership): nothing for /opt/ml, which the image does not have, and the image's 1777 /tmp for /tmp.
readonlyRootFilesystem is --read-only, linuxParameters.capabilities are --cap-drop/--cap-add,
sharedMemorySize is --shm-size in MiB, memory is the hard limit in MiB, cpu the CPU shares, the environment is the
definition's plus the RunTask overrides. Not reproduced here: the GPU (there is none), awsvpc (the container uses
the host's loopback to reach moto_server on 127.0.0.1, where the task's ENI would reach S3 through the VPC
endpoint), the awslogs driver, and the task role's credentials (moto's test keys instead).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.container.conftest import Docker
from tests.trainer.test_s3 import _upload_channel

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(900)]

TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
RUN_AS = (10001, 10001)


def _task_definition() -> tuple[dict, list[dict]]:
    """The trainer's container definition and the task's volumes, as infra/ registers them."""
    from tests.infra.harness import synthesize

    task = synthesize({}, stack="dev").one(TASK_DEFINITION)
    (container,) = json.loads(task.inputs["containerDefinitions"])
    return container, task.inputs["volumes"]


def ecs_docker_run(
    docker: Docker, container: dict, volumes: list[dict], overrides: dict[str, str], image: str
) -> tuple[list[str], dict[str, str]]:
    """The `docker run` arguments (before the image) of one task of ``container``, and its volumes by name."""
    task_volumes = {}
    for volume in volumes:
        config = volume["dockerVolumeConfiguration"]
        assert (config["scope"], config["driver"]) == ("task", "local"), f"not reproduced here: {volume}"
        task_volumes[volume["name"]] = docker.volume(f"ecs-{volume['name']}")
    args = ["--network=host"]
    if container.get("readonlyRootFilesystem"):
        args.append("--read-only")
    if container.get("privileged"):
        args.append("--privileged")
    for mount in container.get("mountPoints", []):
        mode = ":ro" if mount.get("readOnly") else ""
        args += ["--volume", f"{task_volumes[mount['sourceVolume']]}:{mount['containerPath']}{mode}"]
    linux = container.get("linuxParameters", {})
    for cap in linux.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in linux.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    if "sharedMemorySize" in linux:
        args += ["--shm-size", f"{linux['sharedMemorySize']}m"]
    if "memory" in container:
        args += ["--memory", f"{container['memory']}m"]
    if "cpu" in container:
        args += ["--cpu-shares", str(container["cpu"])]
    if "stopTimeout" in container:
        args += ["--stop-timeout", str(container["stopTimeout"])]
    if "user" in container:
        args += ["--user", container["user"]]
    environment = {e["name"]: e["value"] for e in container.get("environment", [])}
    environment.update(overrides)  # RunTask's containerOverrides come after the definition's
    for key, value in sorted(environment.items()):
        args += ["--env", f"{key}={value}"]
    return [*args, image, *container.get("command", [])], task_volumes


def test_trains_from_s3_on_a_fresh_task_volume_and_everything_it_writes_is_the_unprivileged_users(
    docker: Docker, images: dict[str, str], dataset: Path, bucket: str, s3_env: dict[str, str]
) -> None:
    import boto3

    for channel in ("train", "validation"):
        _upload_channel(bucket, dataset / channel, f"digits/{channel}", keep=400)
    container, volumes = _task_definition()
    assert container["readonlyRootFilesystem"], "infra/ runs the trainer on a read-only root filesystem"
    run = "train-20260101-120000-ecs1"
    hps = {"epochs": "2", "checkpoint_every_steps": "4", "checkpoint_s3_uri": f"s3://{bucket}/checkpoints/{run}/"}
    overrides = {  # what ops/aws/training/ecs.py puts in RunTask's containerOverrides
        "SM_CHANNEL_TRAIN": f"s3://{bucket}/digits/train/",
        "SM_CHANNEL_VALIDATION": f"s3://{bucket}/digits/validation/",
        "SM_HPS": json.dumps(hps, sort_keys=True),
        "DEEPCLOUD_MODEL_S3_URI": f"s3://{bucket}/models/{run}/model.tar.gz",
        "TRAINING_JOB_NAME": run,
        "DEEPCLOUD_GIT_REVISION": "0123456789ab",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The task role's credentials and the VPC endpoint, here: moto_server on this host's loopback.
        **{
            k: v
            for k, v in s3_env.items()
            if k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")
        },
    }
    args, task_volumes = ecs_docker_run(docker, container, volumes, overrides, images["trainer"])
    job = docker.mountpoint(task_volumes["job"])
    assert (job.stat().st_uid, job.stat().st_gid, oct(job.stat().st_mode & 0o7777)) == (0, 0, "0o755")
    assert list(job.iterdir()) == [], "a fresh task volume is empty"

    name = docker.name("ecs")
    done = docker("run", "--name", name, *args, check=False)
    assert done.returncode == 0, f"the ECS task's container exited {done.returncode}:\n{docker.logs(name)[-4000:]}"

    s3 = boto3.session.Session().client("s3")
    body = s3.get_object(Bucket=bucket, Key=f"models/{run}/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert tar.getnames() == ["manifest.json", "model.pt2"]
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["training"]["config"]["epochs"] == 2
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"checkpoints/{run}/").get("Contents", [])]
    assert any(k.endswith("/manifest.json") for k in keys), keys

    for volume, root in ((task_volumes["job"], job), (task_volumes["tmp"], docker.mountpoint(task_volumes["tmp"]))):
        written = list(root.rglob("*"))
        assert written, f"nothing in the {volume} volume"
        others = sorted(
            f"{p.relative_to(root)} {p.lstat().st_uid}:{p.lstat().st_gid}"
            for p in written
            if (p.lstat().st_uid, p.lstat().st_gid) != RUN_AS
        )
        assert others == [], f"written in the task volume {volume} but not by uid:gid 10001:10001: {others}"
    assert (job / "input" / "data" / "train" / "manifest.csv").is_file(), "the s3:// channel, downloaded"
    assert (job / "model" / "manifest.json").is_file()
