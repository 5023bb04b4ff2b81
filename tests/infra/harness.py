"""Run infra/__main__.py under Pulumi's unit-test mocks and keep everything it registered.

`pulumi.runtime.set_mocks` swaps the engine for an in-process monitor, so the real program runs exactly as
`pulumi up` would run it (runpy on infra/, run_name __main__) with no CLI, plugin or AWS: resources are
"created" by `AwsMocks.new_resource`, which echoes the inputs and adds the outputs AWS would compute (ids,
ARNs, auto-generated names). A recording monitor keeps each RegisterResource request, so tests see the
inputs exactly as the engine would (camelCase, JSON-able), plus parent, provider, protect, retainOnDelete,
ignoreChanges and the property dependencies. From those, `policy_resources()` builds the same PolicyResource objects the
policy pack receives from `pulumi preview --policy-pack infra/policy`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyCustomTimeouts, PolicyProviderResource, PolicyResource, PolicyResourceOptions

from infra.synth import ACCOUNT, ECS_SERVICE_LINKED_ROLE, PROJECT, REPO, AwsMocks, Registered, run_program

__all__ = [
    "ACCOUNT",
    "ECS_SERVICE_LINKED_ROLE",
    "PROJECT",
    "REPO",
    "AwsMocks",
    "Registered",
    "Synthesis",
    "options_of",
    "policy_json",
    "synthesize",
]
PROGRAM = REPO / "infra" / "__main__.py"


@dataclass
class Synthesis:
    """Everything one run of the program registered, in order, with its stack outputs."""

    resources: list[Registered]
    outputs: dict[str, Any]
    invokes: list[str]
    seconds: float
    stack: str

    def of_type(self, token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == token]

    def one(self, token: str, name_suffix: str = "") -> Registered:
        found = [r for r in self.of_type(token) if r.name.endswith(name_suffix)]
        assert len(found) == 1, f"expected one {token} named *{name_suffix}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def policy_resources(self) -> list[PolicyResource]:
        """The resources as the engine hands them to a stack policy (AnalyzeStack): outputs as props, with
        parent, provider and property dependencies resolved to PolicyResource objects."""
        providers = {r.urn: r for r in self.resources if r.type.startswith("pulumi:providers:")}
        made: dict[str, PolicyResource] = {}
        for r in self.resources:
            provider = None
            if r.provider:
                source = providers.get(r.provider.rsplit("::", 1)[0])  # a provider reference is "<urn>::<id>"
                if source is not None:
                    provider = PolicyProviderResource(source.type, source.inputs, source.urn, source.name)
            made[r.urn] = PolicyResource(r.type, r.outputs, r.urn, r.name, options_of(r), provider, None, [], {})
        for r in self.resources:
            resource = made[r.urn]
            resource.parent = made.get(r.parent)
            resource.dependencies = [made[d] for d in r.dependencies if d in made]
            resource.property_dependencies = {
                k: [made[d] for d in v if d in made] for k, v in r.property_dependencies.items()
            }
        return list(made.values())


def options_of(r: Registered) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=r.protect,
        ignore_changes=r.ignore_changes,
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=r.parent or None,
    )


def synthesize(
    values: dict[str, str],
    stack: str = "dev",
    region: str = "eu-west-1",
    roles: tuple[str, ...] = (ECS_SERVICE_LINKED_ROLE,),
) -> Synthesis:
    """Run infra/__main__.py once under mocks (infra/synth.py) with `deepcloud:` config `values`, in an account that
    has the IAM `roles` (the default: one that has used ECS before)."""
    resources, outputs, invokes, seconds = run_program(values, stack, region, roles)
    return Synthesis(resources=resources, outputs=outputs, invokes=invokes, seconds=seconds, stack=stack)


def policy_json(value: Any) -> Any:
    """A policy document as a dict, whether the engine holds it as a JSON string or as an object."""
    return json.loads(value) if isinstance(value, str) else value
