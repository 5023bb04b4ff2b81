"""The base of every component: its type token and how its children are attached to it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import pulumi
import pulumi_aws as aws

Args = TypeVar("Args")


class Component(pulumi.ComponentResource, Generic[Args]):
    """A ComponentResource typed `deepcloud:index:<ClassName>`, holding its name and typed args."""

    def __init__(self, name: str, args: Args, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"deepcloud:index:{type(self).__name__}", name, None, opts)
        self._name = name
        self._args = args

    def _child(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a child resource: parented to this component (so it inherits its provider), plus `kwargs`."""
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _create_log_group(
        self, suffix: str, name: str, retention_days: int, key_arn: pulumi.Input[str]
    ) -> aws.cloudwatch.LogGroup:
        """A log group named `name` (readable in the console and in what ops prints) that expires its events after
        `retention_days` and is encrypted with the stack's key."""
        return aws.cloudwatch.LogGroup(
            f"{self._name}-{suffix}",
            name=name,
            retention_in_days=retention_days,
            kms_key_id=key_arn,
            opts=self._child(),
        )
