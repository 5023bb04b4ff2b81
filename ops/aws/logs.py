"""CloudWatch Logs: follow one stream (a training task or job) or a whole group (an endpoint), and find the
first Python traceback in what was read."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ops.aws.clients import error_code

TRACEBACK = "Traceback (most recent call last):"


class StreamTail:
    """New lines of one log stream since the last call; a stream that does not exist yet has none."""

    def __init__(self, logs: Any, group: str, stream: str) -> None:
        self.logs, self.group, self.stream = logs, group, stream
        self.token: str | None = None
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        new: list[str] = []
        while True:
            kwargs = {"logGroupName": self.group, "logStreamName": self.stream, "startFromHead": True}
            if self.token:
                kwargs["nextToken"] = self.token
            try:
                page = self.logs.get_log_events(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return new
                raise
            events = page.get("events", [])
            new.extend(_message(e) for e in events)
            same = page.get("nextForwardToken") == self.token
            self.token = page.get("nextForwardToken", self.token)
            if same or not events:
                break
        self.lines.extend(new)
        return new


class GroupTail:
    """New lines of every stream in a log group (or those with a name prefix), from ``since_ms`` on; with
    ``label_hosts``, each line starts with its host (``[algo-2] ...``), for a SageMaker job on several instances."""

    def __init__(
        self, logs: Any, group: str, since_ms: int, prefix: str | None = None, label_hosts: bool = False
    ) -> None:
        self.logs, self.group, self.since_ms, self.prefix = logs, group, since_ms, prefix
        self.label_hosts = label_hosts
        self.seen: set[str] = set()
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        kwargs: dict[str, Any] = {"logGroupName": self.group, "startTime": self.since_ms}
        if self.prefix:
            kwargs["logStreamNamePrefix"] = self.prefix
        new: list[str] = []
        try:
            for page in self.logs.get_paginator("filter_log_events").paginate(**kwargs):
                for event in page.get("events", []):
                    if event["eventId"] not in self.seen:
                        self.seen.add(event["eventId"])
                        label = f"[{host(event.get('logStreamName', ''))}] " if self.label_hosts else ""
                        new.append(label + _message(event))
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return []
            raise
        self.lines.extend(new)
        return new


def host(stream: str) -> str:
    """The host of a SageMaker training job's log stream: ``<job>/algo-<n>-<epoch seconds>`` (SageMaker guide, "Log
    Amazon SageMaker AI events with Amazon CloudWatch") is ``algo-<n>``; any other name is kept whole."""
    name = stream.rsplit("/", 1)[-1]
    head, _, tail = name.rpartition("-")
    return head if head.startswith("algo-") and tail.isdigit() else name


def _message(event: dict) -> str:
    return str(event.get("message", "")).rstrip("\n")


def first_traceback(lines: list[str]) -> list[str]:
    """The first traceback in ``lines``: its header, the indented frames, and the exception line; [] if none."""
    for start, line in enumerate(lines):
        if TRACEBACK in line:
            block = [line]
            for follow in lines[start + 1 :]:
                block.append(follow)
                if follow and not follow[:1].isspace() and TRACEBACK not in follow:
                    break
            return block
    return []


def last_error(lines: list[str]) -> str | None:
    """The last `error: ...` line the trainer or server printed (their one-line failure reason)."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("error: "):
            return text[len("error: ") :]
    return None
