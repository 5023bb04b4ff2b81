"""Run the training process as an unprivileged user even where the platform starts it as root.

SageMaker starts training containers as root and mounts /opt/ml owned by root, so an image whose
USER is not root cannot write its model there. ECS gives the task a fresh volume at /opt/ml, empty, root's and
mode 0755 (moby's local volume driver creates it so). The image therefore starts as root with
``DEEPCLOUD_RUN_AS=uid:gid`` set: before any user code or data is touched, the writable parts of the
layout are handed to that user and the process drops to it for good. Those are model/, output/ (with
output/data/), checkpoints/, and the folder of every ``s3://`` channel, input/data/<name>/, which the trainer
downloads into; folders this makes on the way (input/ and input/data/ on ECS) are that user's too. What the
platform provides and the trainer only reads (hyperparameters, local channels) stays as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.errors import ConfigError
from trainer.sagemaker_env import SageMakerEnv


def drop_privileges(env: SageMakerEnv, spec: str | None = None) -> tuple[int, int] | None:
    """Switch to ``uid:gid`` from DEEPCLOUD_RUN_AS when running as root; return the ids, or None."""
    spec = os.environ.get("DEEPCLOUD_RUN_AS", "") if spec is None else spec
    if not spec or os.geteuid() != 0:
        return None
    uid_text, _, gid_text = spec.partition(":")
    if not (uid_text.isdigit() and gid_text.isdigit()) or int(uid_text) == 0:
        raise ConfigError(f"DEEPCLOUD_RUN_AS={spec!r} must be 'uid:gid' of a non-root user, e.g. 10001:10001")
    uid, gid = int(uid_text), int(gid_text)
    roots = [env.model_dir, env.output_data_dir.parent, env.output_data_dir, env.checkpoint_dir,
             *(env.download_dir(name) for name in env.s3_channels())]
    # Every folder first, then the handover: once a folder is the user's, root may not create anything in it
    # where the platform leaves it no CAP_DAC_OVERRIDE (the ECS task definition keeps only CHOWN, SETUID, SETGID).
    made: list[Path] = []
    for root in roots:
        made += [p for p in (root, *root.parents) if not p.exists()]
        root.mkdir(parents=True, exist_ok=True)
    for path in [*made, *(p for root in roots for p in (root, *root.rglob("*")))]:
        os.chown(path, uid, gid, follow_symlinks=False)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # last: after this nothing can take root back
    os.environ["HOME"] = str(Path("/tmp"))  # noqa: S108 - torch and matplotlib want a writable home for caches
    return uid, gid
