"""Where training runs leave things in the artifacts bucket, and the run record kept beside each model::

s3://<artifacts>/models/<run-id>/model.tar.gz   the model artifact (docs/artifact.md)
s3://<artifacts>/models/<run-id>/run.json       the run record: backend, task or job, image, hyperparameters,
                                                limits, prices, status, exit code and reason
s3://<artifacts>/checkpoints/<run-id>/          the trainer's checkpoints (ECS: checkpoint_s3_uri;
                                                SageMaker: CheckpointConfig)
"""

from __future__ import annotations

import json
import secrets
import tarfile
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ops.aws.clients import error_code
from ops.errors import OpsError

MODELS = "models/"
ARCHIVE = "model.tar.gz"
RECORD = "run.json"
CHANNELS = ("train", "validation", "test")


def new_run_id() -> str:
    """Sortable by time, unique within the second; valid as an ECS startedBy and a SageMaker job name."""
    return f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def model_key(run_id: str) -> str:
    return f"{MODELS}{run_id}/{ARCHIVE}"


def record_key(run_id: str) -> str:
    return f"{MODELS}{run_id}/{RECORD}"


def checkpoint_uri(bucket: str, run_id: str) -> str:
    return f"s3://{bucket}/checkpoints/{run_id}/"


def write_record(s3: Any, bucket: str, record: dict) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=record_key(record["run_id"]),
        ContentType="application/json",
        Body=(json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
    )


def read_json(s3: Any, bucket: str, key: str) -> Any | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise OpsError(f"s3://{bucket}/{key} is not valid JSON: delete or fix it") from None


def read_record(s3: Any, bucket: str, run_id: str) -> dict | None:
    return read_json(s3, bucket, record_key(run_id))


def list_runs(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """run id -> {"model": LastModified of its model.tar.gz or None, "record": bool}, from one listing."""
    runs: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MODELS):
        for obj in page.get("Contents", []):
            parts = obj["Key"][len(MODELS) :].split("/")
            if len(parts) != 2:
                continue
            entry = runs.setdefault(parts[0], {"model": None, "record": False})
            if parts[1] == ARCHIVE:
                entry["model"] = obj["LastModified"]
            elif parts[1] == RECORD:
                entry["record"] = True
    return runs


def latest_model(s3: Any, bucket: str) -> str:
    """The run id of the newest model.tar.gz under models/."""
    models = [(info["model"], run_id) for run_id, info in list_runs(s3, bucket).items() if info["model"]]
    if not models:
        raise OpsError(f"no trained model in s3://{bucket}/{MODELS}: run `make train TARGET=aws` first")
    return max(models)[1]


def require_model(s3: Any, bucket: str, run_id: str) -> None:
    try:
        s3.head_object(Bucket=bucket, Key=model_key(run_id))
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            raise OpsError(
                f"no model for run {run_id}: s3://{bucket}/{model_key(run_id)} does not exist "
                "(`make status TARGET=aws` lists the runs)"
            ) from None
        raise


def read_manifest(s3: Any, bucket: str, run_id: str) -> dict[str, Any]:
    """manifest.json inside the run's model.tar.gz, read from the S3 stream until it turns up (the packer writes it
    first: docs/artifact.md), so the model itself is not downloaded."""
    where = f"s3://{bucket}/{model_key(run_id)}"
    body = s3.get_object(Bucket=bucket, Key=model_key(run_id))["Body"]
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./") == "manifest.json":
                    file = tar.extractfile(member)
                    if file is not None:  # None only for what is not a regular file
                        return json.loads(file.read())
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise OpsError(f"cannot read manifest.json from {where}: {exc}") from None
    raise OpsError(f"{where} has no manifest.json (docs/artifact.md)")
