"""What every aws command works with: the repository, the stack, one AWS session, the price table, timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.aws.clients import Aws
from ops.aws.prices import PriceTable
from ops.aws.pulumi import Pulumi
from ops.aws.stack import Stack, StackOutputs
from ops.paths import Paths

POLL_ENV = "DEEPCLOUD_POLL_SECONDS"
"""Seconds between two looks at a running task, job or endpoint (default 5; the tests use 0)."""


@dataclass
class Context:
    repo: Path
    paths: Paths
    stack: Stack
    aws: Aws
    prices: PriceTable = field(default_factory=PriceTable.load)
    poll_s: float = field(default_factory=lambda: float(os.environ.get(POLL_ENV, "5")))
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    @property
    def outputs(self) -> StackOutputs:
        return self.stack.outputs

    @property
    def pulumi(self) -> Pulumi:
        return self.stack.pulumi

    def wait(self) -> None:
        self.sleep(self.poll_s)


def connect(region: str) -> Aws:
    """The session for the stack's region (tests replace this to hand out stubbed clients)."""
    return Aws(region)


def open_context(repo: Path, paths: Paths, stack_name: str | None = None) -> Context:
    stack = Stack.load(Pulumi(repo, stack_name))
    return Context(repo=repo, paths=paths, stack=stack, aws=connect(stack.outputs.region))
