"""Run the training process as an unprivileged user even where the platform starts it as root.

SageMaker starts training containers as root and mounts /opt/ml owned by root, so an image whose
USER is not root cannot write its model there. The image therefore starts as root with
``DEEPCLOUD_RUN_AS=uid:gid`` set: before any user code or data is touched, the writable parts of the
layout are handed to that user and the process drops to it for good.
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
    for root in (env.model_dir, env.output_data_dir.parent, env.checkpoint_dir):
        root.mkdir(parents=True, exist_ok=True)
        for path in (root, *root.rglob("*")):
            os.chown(path, uid, gid, follow_symlinks=False)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # last: after this nothing can take root back
    os.environ["HOME"] = str(Path("/tmp"))  # noqa: S108 - torch and matplotlib want a writable home for caches
    return uid, gid
