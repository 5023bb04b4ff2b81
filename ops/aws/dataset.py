"""`make data TARGET=aws`: the dataset (``DATASET``, digits by default), written here as for the local target, then
copied to the stack's data bucket under a prefix of its own, where training tasks and jobs read their channels
from::

    s3://<data>/<DATASET>/{train,validation,test}/...     e.g. s3://<data>/digits/train/, s3://<data>/mnist/train/

Files already in the bucket with the same size are not sent again, so a repeated `make data` is quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops.aws.console import say
from ops.aws.runs import CHANNELS
from ops.data import DEFAULT_DATASET
from ops.errors import OpsError


def dataset_prefix(dataset: str) -> str:
    """The dataset's folder in the data bucket: one per dataset, so uploading one never mixes it with another."""
    return f"{dataset}/"


def upload(s3: Any, local: Path, bucket: str, prefix: str) -> tuple[int, int]:
    """Copy every file under ``local`` to ``s3://bucket/prefix``; (files sent, files already there)."""
    present = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        present.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})
    sent = kept = 0
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(local).as_posix()
        if present.get(key) == path.stat().st_size:
            kept += 1
            continue
        s3.upload_file(str(path), bucket, key)
        sent += 1
    say(f"s3://{bucket}/{prefix}: {sent} files sent, {kept} already there")
    return sent, kept


def channels(s3: Any, bucket: str, dataset: str) -> dict[str, str]:
    """channel -> s3:// URI for the channels of ``dataset`` in the bucket; the train channel is required."""
    prefix = dataset_prefix(dataset)
    found = set()
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    for common in listing.get("CommonPrefixes", []):
        found.add(common["Prefix"][len(prefix) :].rstrip("/"))
    if "train" not in found:
        named = "" if dataset == DEFAULT_DATASET else f" DATASET={dataset}"
        raise OpsError(f"no dataset in s3://{bucket}/{prefix}: run `make data TARGET=aws{named}` first")
    return {c: f"s3://{bucket}/{prefix}{c}/" for c in CHANNELS if c in found}
