"""What SageMaker does for a training job and ECS does not, done by the trainer itself when it runs on ECS.

SageMaker syncs ``<base>/checkpoints`` with S3, packs and uploads ``SM_MODEL_DIR``, and syncs
``output/tensorboard`` (TensorBoardOutputConfig). On ECS nothing does, so with ``checkpoint_s3_uri`` the
trainer mirrors each checkpoint and pulls S3's copies down on start, and with ``DEEPCLOUD_MODEL_S3_URI``
it uploads model.tar.gz and the TensorBoard event files (docs/trainer.md, README "AWS").
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from trainer.sagemaker_env import SageMakerEnv
from trainer.tracking import tensorboard_dir, tensorboard_uri

MODEL_URI_ENV = "DEEPCLOUD_MODEL_S3_URI"
"""When set (ECS), the packed model.tar.gz is uploaded to this s3://bucket/key at the end."""


def upload_model(env: SageMakerEnv, uri: str) -> None:
    """ECS: nothing packs and uploads SM_MODEL_DIR as SageMaker does, so pack it with the packer ops uses for
    the local target (:mod:`trainer.archive`) and upload it to ``uri``, after the manifest is written."""
    from trainer import s3
    from trainer.archive import pack_model

    archive = pack_model(env.model_dir, env.output_data_dir / "model.tar.gz")
    try:
        s3.upload_file(archive, uri)
    finally:
        archive.unlink(missing_ok=True)
    print(f"model uploaded to {uri}", flush=True)


def upload_tensorboard(env: SageMakerEnv, model_uri: str) -> None:
    """ECS: nothing syncs output/tensorboard as SageMaker's TensorBoardOutputConfig does, so upload the event
    files beside the model (:func:`trainer.tracking.tensorboard_uri`), whatever the outcome. A failure is one
    warning line: it must not turn a job whose model is written, or a stop, into a failure."""
    from trainer import s3
    from trainer.errors import DataError

    local = tensorboard_dir(env.base_dir)
    if not local.is_dir():
        return
    uri = tensorboard_uri(model_uri)
    try:
        s3.upload_dir(local, uri)
    except DataError as exc:
        print(f"warning: TensorBoard event files not uploaded: {exc}", file=sys.stderr, flush=True)
        return
    print(f"tensorboard uploaded to {uri}", flush=True)


def checkpoint_uploader(uri: str) -> Callable[[Path], None] | None:
    """What mirrors each new checkpoint folder to ``uri`` (None when empty: SageMaker syncs the folder itself)."""
    if not uri:
        return None
    from trainer import s3

    def upload(path: Path) -> None:
        # Commit marker last: a reader of the S3 copy finds a complete checkpoint or none.
        s3.upload_dir(path, f"{uri.rstrip('/')}/{path.name}/", last=("manifest.json",))

    return upload


def pull_checkpoints(uri: str, root: Path) -> None:
    """ECS: nothing syncs <base>/checkpoints, so bring S3's copies down before looking for the newest."""
    from trainer import s3

    for prefix in s3.list_subprefixes(uri):
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("step-") and not (root / name / "manifest.json").exists():
            s3.download_dir(f"{uri.rstrip('/')}/{name}/", root / name)
