"""The trainer as `make train TARGET=aws` runs it on ECS: no hyperparameters.json (they come as SM_HPS), channels
on S3, checkpoints to checkpoint_s3_uri, and the packed model uploaded to DEEPCLOUD_MODEL_S3_URI at the end."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import run_trainer
from tests.trainer.test_s3 import _upload_channel
from trainer.config import TrainConfig
from trainer.errors import ConfigError


def test_sm_hps_wins_over_the_file_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"epochs": "7"}))
    assert TrainConfig.load(path, {}).epochs == 7
    assert TrainConfig.load(path, {"SM_HPS": json.dumps({"epochs": "3", "lr": "0.01"})}).epochs == 3
    assert TrainConfig.load(tmp_path / "absent.json", {"SM_HPS": ""}) == TrainConfig()
    with pytest.raises(ConfigError, match=r"^SM_HPS is not valid JSON"):
        TrainConfig.load(path, {"SM_HPS": "{epochs"})
    with pytest.raises(ConfigError, match=r"^SM_HPS must hold a JSON object"):
        TrainConfig.load(path, {"SM_HPS": "[1]"})
    with pytest.raises(ConfigError, match=r"^unknown hyperparameter 'epoch'"):
        TrainConfig.load(path, {"SM_HPS": json.dumps({"epoch": "3"})})


@pytest.mark.slow
def test_ecs_run_uploads_the_model_and_checkpoints(
    bucket: str, s3_env: dict[str, str], tmp_path: Path, dataset: Path
) -> None:
    import boto3

    for channel in ("train", "validation"):
        _upload_channel(bucket, dataset / channel, f"digits/{channel}", keep=200)
    base = tmp_path / "job"
    base.mkdir()
    hps = {"epochs": "1", "checkpoint_s3_uri": f"s3://{bucket}/checkpoints/run-1/", "checkpoint_every_steps": "2"}
    env = {
        **s3_env,
        "SM_HPS": json.dumps(hps),
        "SM_CHANNEL_TRAIN": f"s3://{bucket}/digits/train/",
        "SM_CHANNEL_VALIDATION": f"s3://{bucket}/digits/validation/",
        "DEEPCLOUD_MODEL_S3_URI": f"s3://{bucket}/models/run-1/model.tar.gz",
    }
    result = run_trainer(base, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (base / "input" / "config" / "hyperparameters.json").exists()
    assert f"model uploaded to s3://{bucket}/models/run-1/model.tar.gz" in result.stdout
    s3 = boto3.session.Session().client("s3")
    body = s3.get_object(Bucket=bucket, Key="models/run-1/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert names == ["manifest.json", "model.pt2"], "files at the archive root, the manifest first"
    assert manifest["training"]["config"]["epochs"] == 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/run-1/").get("Contents", [])]
    assert any(k.endswith("/manifest.json") for k in keys), keys
    assert not list(base.glob("output/data/.model.tar.gz*")), "the temporary archive is removed"
