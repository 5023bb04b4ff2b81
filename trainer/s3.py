"""S3 for the trainer: ``s3://`` channels in, checkpoints out and back.

Every call makes a fresh client from the environment, like ``boto3.client("s3")`` but on a new session, so
the usual variables configure it each time (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, the instance or
task role) and a test that changes them is not served stale credentials cached by boto3's default session.

A URI names a folder: ``s3://bucket/data/train`` means every object under ``data/train/``, saved under the
destination at its path relative to that folder. A URI that names one object (``s3://bucket/data/x.npz``)
downloads that object. Botocore's errors become one-line :class:`~trainer.errors.DataError` messages that
say what failed and what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError
from s3transfer.subscribers import BaseSubscriber
from tqdm import tqdm

from trainer.errors import DataError

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
"""Lenient on purpose (legacy us-east-1 buckets allow upper case and underscores); S3 itself has the last word."""

_ACCESS = ("AccessDenied", "AllAccessDisabled", "403", "Forbidden")
_CREDENTIALS = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
)
_MISSING_KEY = ("NoSuchKey", "404", "NotFound")
_PART = ".part"
"""Suffix of the temporary name an object is downloaded to (``.<name>.<pid>.part``, hidden, next to it)."""


@dataclass(frozen=True, slots=True)
class S3Object:
    key: str
    size: int
    """Bytes, as the listing reports them; the downloaded file must have exactly this size."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; the prefix may be empty."""
    if not uri.startswith("s3://"):
        raise DataError(f"'{uri}' is not an S3 URI: expected s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise DataError(f"'{uri}' does not start with a valid bucket name: expected s3://bucket/prefix")
    return bucket, prefix


def download_prefix(uri: str, dest: str | os.PathLike[str], progress: bool = False) -> list[Path]:
    """Download every object under ``uri`` into ``dest`` and return the local paths, in key order.

    Resumable: an object whose local file already has the listed size is not transferred again. Each object
    is written to a hidden temporary name next to its file, checked against the listed size, then renamed,
    so a file that has its final name is complete. With ``progress``, a tqdm bar (bytes) on stderr when it
    is a terminal, otherwise a few plain lines on stdout. Local files that are not in the listing are left
    alone.
    """
    dest = Path(dest)
    bucket, prefix = parse_s3_uri(uri)
    client = _client()
    folder = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    with _errors("list", uri):
        objects = [o for o in _list(client, bucket, folder) if not o.key.endswith("/")]
        if not objects and folder != prefix:  # the URI may name a single object
            objects = [o for o in _list(client, bucket, prefix) if o.key == prefix]
            folder = prefix.rpartition("/")[0] + "/" if "/" in prefix else ""
    if not objects:
        raise DataError(f"no objects under {uri}: check the URI (a prefix is read as a folder, {uri.rstrip('/')}/)")
    plan = [(obj, _local_path(dest, obj.key, obj.key[len(folder) :], uri)) for obj in objects]
    todo = [(obj, path) for obj, path in plan if not _complete(path, obj.size)]
    report = _Progress(uri, dest, plan, todo, enabled=progress)
    try:
        _fetch(client, bucket, todo, report, uri)
    finally:
        report.close()
    return [path for _, path in plan]


def download_dir(uri_prefix: str, dest: str | os.PathLike[str]) -> list[Path]:
    """:func:`download_prefix` without progress output (checkpoints pulled back on start)."""
    return download_prefix(uri_prefix, dest, progress=False)


def upload_file(path: str | os.PathLike[str], uri: str) -> None:
    """Upload one local file to the object ``uri`` (``s3://bucket/key``), replacing it if it exists."""
    bucket, key = parse_s3_uri(uri)
    if key == "" or key.endswith("/"):
        raise DataError(f"'{uri}' names a folder, not an object: upload_file needs s3://bucket/key")
    client = _client()
    with _errors("upload to", uri):
        client.upload_file(os.fspath(path), bucket, key)


def upload_dir(local_dir: str | os.PathLike[str], uri_prefix: str, *, last: Sequence[str] = ()) -> list[str]:
    """Upload every file under ``local_dir`` to ``uri_prefix/<relative path>``; return the object URIs.

    Files go in sorted order, except those whose relative paths are in ``last``, which go after all the
    others in the given order (a commit marker such as ``manifest.json``, so that a reader who finds the
    marker also finds everything it covers).
    """
    root = Path(local_dir)
    bucket, prefix = parse_s3_uri(uri_prefix)
    folder = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    ordered = [f for f in files if f not in last] + [f for f in last if f in files]
    client = _client()
    uris = []
    for rel in ordered:
        uri = f"s3://{bucket}/{folder}{rel}"
        with _errors("upload to", uri):
            client.upload_file(os.fspath(root / rel), bucket, folder + rel)
        uris.append(uri)
    return uris


def list_subprefixes(uri_prefix: str) -> list[str]:
    """The immediate sub-folders of ``uri_prefix`` as sorted URIs ending in ``/`` (``[]`` when none)."""
    bucket, prefix = parse_s3_uri(uri_prefix)
    folder = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    client = _client()
    found: set[str] = set()
    with _errors("list", uri_prefix):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
            found.update(item["Prefix"] for item in page.get("CommonPrefixes", []))
    return [f"s3://{bucket}/{p}" for p in sorted(found)]


def _client() -> Any:
    try:
        return boto3.session.Session().client("s3")
    except (BotoCoreError, ValueError) as exc:  # e.g. AWS_ENDPOINT_URL that is not a URL
        raise DataError(f"cannot create an S3 client: {_one_line(exc)}: check AWS_ENDPOINT_URL and AWS_*") from None


def _list(client: Any, bucket: str, prefix: str) -> list[S3Object]:
    objects: list[S3Object] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(S3Object(item["Key"], int(item["Size"])) for item in page.get("Contents", []))
    return sorted(objects, key=lambda o: o.key)


def _local_path(dest: Path, key: str, rel: str, uri: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(part in ("..", ".") for part in parts):
        raise DataError(f"S3 object '{key}' under {uri} has no safe local path inside {dest}: rename the object")
    return dest.joinpath(*parts)


def _complete(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{_PART}")


def _fetch(client: Any, bucket: str, todo: list[tuple[S3Object, Path]], report: _Progress, uri: str) -> None:
    """Download ``todo`` concurrently to temporary names; check each size; rename into place."""
    if not todo:
        return
    temporaries = [_temporary(path) for _, path in todo]
    try:
        with _errors("download", uri), create_transfer_manager(client, TransferConfig()) as manager:
            futures = []
            for (obj, path), tmp in zip(todo, temporaries, strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                futures.append(manager.download(bucket, obj.key, os.fspath(tmp), subscribers=[_Subscriber(report)]))
            for (obj, path), tmp, future in zip(todo, temporaries, futures, strict=True):
                future.result()
                got = tmp.stat().st_size
                if got != obj.size:
                    raise DataError(
                        f"s3://{bucket}/{obj.key} downloaded as {got} bytes, but the listing says {obj.size}: "
                        "the object changed or the transfer was cut short; run the job again"
                    )
                os.replace(tmp, path)
    except OSError as exc:  # botocore wraps network errors; what is left is the local disk
        raise DataError(
            f"cannot save the download of {uri}: {_one_line(exc)}: check free space and permissions"
        ) from None
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


class _Subscriber(BaseSubscriber):
    def __init__(self, report: _Progress) -> None:
        self._report = report

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._report.add(bytes_transferred)

    def on_done(self, future: Any, **kwargs: Any) -> None:
        self._report.file_done()


class _Progress:
    """A bytes bar on a terminal; otherwise a start line, a line per 10 % and an end line on stdout."""

    def __init__(
        self, uri: str, dest: Path, plan: list[tuple[S3Object, Path]], todo: list[tuple[S3Object, Path]], enabled: bool
    ) -> None:
        self._uri = uri
        self._lock = threading.Lock()
        self._files = len(todo)
        self._total = sum(obj.size for obj, _ in todo)
        self._done_files = 0
        self._done_bytes = 0
        self._next_tenth = 1
        self._start = time.monotonic()
        self._plain = enabled and not sys.stderr.isatty()
        self._bar = tqdm(
            total=self._total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            dynamic_ncols=True,
            desc=f"download {uri}",
            disable=not enabled or self._plain or not todo,
        )
        if self._plain:
            present = len(plan) - len(todo)
            print(
                f"s3 download {uri} -> {dest}: {_count(len(todo), 'object')} ({_size(self._total)}) to fetch, "
                f"{present} already present",
                flush=True,
            )

    def add(self, count: int) -> None:
        with self._lock:
            self._done_bytes += count
            self._bar.update(count)

    def file_done(self) -> None:
        with self._lock:
            self._done_files += 1
            done, total = (self._done_bytes, self._total) if self._total else (self._done_files, max(self._files, 1))
            tenth = 10 * done // total
            if self._plain and tenth >= self._next_tenth and self._done_files < self._files:
                self._next_tenth = tenth + 1
                print(
                    f"s3 download {self._uri}: {self._done_files}/{_count(self._files, 'object')}, "
                    f"{_size(self._done_bytes)}/{_size(self._total)}",
                    flush=True,
                )

    def close(self) -> None:
        self._bar.close()
        if self._plain and self._files:
            print(
                f"s3 download {self._uri}: {self._done_files}/{_count(self._files, 'object')}, "
                f"{_size(self._done_bytes)} in {time.monotonic() - self._start:.1f}s",
                flush=True,
            )


def _count(n: int, noun: str) -> str:
    """'1 object', '3 objects'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextlib.contextmanager
def _errors(action: str, uri: str) -> Iterator[None]:
    """Turn botocore's exceptions into one-line DataErrors: what failed, and what to do."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise DataError(
            f"cannot {action} {uri}: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), or run with an IAM role"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
        raise DataError(
            f"cannot {action} {uri}: the S3 endpoint is unreachable ({_one_line(exc)}): "
            "check the network, or AWS_ENDPOINT_URL if you set it"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DataError(_client_error(action, uri, str(error.get("Code", "")), str(error.get("Message", "")))) from None
    except (Boto3Error, BotoCoreError, RetriesExceededError, S3DownloadFailedError) as exc:
        # s3transfer wraps some failures (S3UploadFailedError: "... An error occurred (NoSuchBucket) ...").
        text = _one_line(exc)
        code = re.search(r"An error occurred \(([^)]+)\)", text)
        raise DataError(_client_error(action, uri, code.group(1) if code else "", text)) from None


def _client_error(action: str, uri: str, code: str, message: str) -> str:
    bucket = parse_s3_uri(uri)[0]
    if code == "NoSuchBucket":
        return (
            f"cannot {action} {uri}: bucket '{bucket}' does not exist: "
            "check the bucket name and the account the credentials belong to"
        )
    if code in _ACCESS:
        return (
            f"cannot {action} {uri}: access denied: give the job's credentials s3:ListBucket and s3:GetObject "
            "(s3:PutObject to upload) on it"
        )
    if code in _CREDENTIALS:
        return (
            f"cannot {action} {uri}: S3 rejected the credentials ({code}): "
            "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or the role"
        )
    if code in _MISSING_KEY:
        return f"cannot {action} {uri}: no such object: check the key"
    detail = f"{code}: {message}" if code and code not in message else message
    return f"cannot {action} {uri}: {_one_line(Exception(detail)) or 'unknown S3 error'}"
