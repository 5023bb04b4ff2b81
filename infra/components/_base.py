"""The base of every component: its type token and how its children are attached to it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import pulumi

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
