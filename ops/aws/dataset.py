"""`make data TARGET=aws`: the demo dataset, written here as for the local target, then copied to the stack's
data bucket, where training tasks and jobs read their channels from::

    s3://<data>/digits/{train,validation,test}/...

Files already in the bucket with the same size are not sent again, so a repeated `make data` is quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops.aws.console import say
from ops.aws.runs import CHANNELS
from ops.errors import OpsError

DATASET_PREFIX = "digits/"


def upload(s3: Any, local: Path, bucket: str, prefix: str = DATASET_PREFIX) -> tuple[int, int]:
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


def channels(s3: Any, bucket: str, prefix: str = DATASET_PREFIX) -> dict[str, str]:
    """channel -> s3:// URI for the channels present under the prefix; the train channel is required."""
    found = set()
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    for common in listing.get("CommonPrefixes", []):
        found.add(common["Prefix"][len(prefix):].rstrip("/"))
    if "train" not in found:
        raise OpsError(f"no dataset in s3://{bucket}/{prefix}: run `make data TARGET=aws` first")
    return {c: f"s3://{bucket}/{prefix}{c}/" for c in CHANNELS if c in found}
