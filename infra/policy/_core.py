"""The policy pack's machinery: the rule registry, waivers, and helpers for reading resource properties.

A rule is a plain function plus metadata. Resource rules see one resource's inputs (`args.props`, camelCase
as in the Pulumi schema) and yield messages; stack rules see every resource of the stack, with each
resource's property dependencies, and yield (resource, message) pairs. `policies()` wraps each rule in the
pulumi-policy class the engine calls, applying waivers.toml on the way, so the tests exercise exactly the
validators `pulumi preview --policy-pack infra/policy` runs.

Properties may be unknown during preview (an ARN not yet created); reading one raises pulumi-policy's
UnknownValueError, which the SDK reports as "can't run during preview". Relations between resources (which
bucket a public-access block belongs to) are therefore followed through property dependencies, which are
known in preview, never by comparing names.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

WAIVERS_FILE = Path(__file__).with_name("waivers.toml")

ResourceCheck = Callable[[Any], Iterable[str]]
StackCheck = Callable[[Sequence[PolicyResource]], Iterable[tuple[PolicyResource, str]]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    references: tuple[str, ...]
    """The checks this rule implements: Checkov ids, AWS Foundational Security Best Practices controls,
    AWS Config rules."""
    resource_check: ResourceCheck | None = None
    """A resource rule: one resource's inputs -> messages."""
    stack_check: StackCheck | None = None
    """A stack rule: every resource of the stack -> (resource, message) pairs."""
    resource_types: tuple[str, ...] = ()
    """Types a resource rule applies to; empty for a stack rule."""
    enforcement: EnforcementLevel = EnforcementLevel.MANDATORY


RULES: list[Rule] = []


def resource_rule(
    name: str,
    description: str,
    types: Sequence[str],
    references: Sequence[str],
    enforcement: EnforcementLevel = EnforcementLevel.MANDATORY,
) -> Callable[[ResourceCheck], ResourceCheck]:
    """Register `check(resource) -> messages` for resources of `types`."""

    def register(check: ResourceCheck) -> ResourceCheck:
        RULES.append(
            Rule(
                name,
                description,
                tuple(references),
                resource_check=check,
                resource_types=tuple(types),
                enforcement=enforcement,
            )
        )
        return check

    return register


def stack_rule(
    name: str, description: str, references: Sequence[str], enforcement: EnforcementLevel = EnforcementLevel.MANDATORY
) -> Callable[[StackCheck], StackCheck]:
    """Register `check(resources) -> (resource, message)` over the whole stack."""

    def register(check: StackCheck) -> StackCheck:
        RULES.append(Rule(name, description, tuple(references), stack_check=check, enforcement=enforcement))
        return check

    return register


@dataclass(frozen=True)
class Waiver:
    rule: str
    type: str
    name: str
    """fnmatch pattern of the resource's logical name."""
    reason: str

    def covers(self, rule: str, resource_type: str, name: str) -> bool:
        return rule == self.rule and resource_type == self.type and fnmatch.fnmatchcase(name, self.name)


def load_waivers(path: Path = WAIVERS_FILE) -> list[Waiver]:
    entries = tomllib.loads(path.read_text())["waiver"]
    return [Waiver(rule=e["rule"], type=e["type"], name=e["name"], reason=e["reason"].strip()) for e in entries]


def _waived(waivers: Sequence[Waiver], rule: str, resource_type: str, name: str) -> bool:
    return any(w.covers(rule, resource_type, name) for w in waivers)


def to_policy(rule: Rule, waivers: Sequence[Waiver]) -> Policy:
    """The pulumi-policy object that runs `rule`, skipping waived resources."""
    description = f"{rule.description} [{'; '.join(rule.references)}]"
    stack_check, resource_check = rule.stack_check, rule.resource_check
    if stack_check is not None:

        def validate_stack(args: StackValidationArgs, report: ReportViolation) -> None:
            for resource, message in stack_check(args.resources):
                if not _waived(waivers, rule.name, resource.resource_type, resource.name):
                    report(f"{resource.name}: {message}", resource.urn)

        return StackValidationPolicy(rule.name, description, validate_stack, rule.enforcement)

    if resource_check is None:
        raise ValueError(f"rule {rule.name} has neither a stack nor a resource check")

    def validate_resource(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in rule.resource_types:
            return
        if _waived(waivers, rule.name, args.resource_type, args.name):
            return
        for message in resource_check(args):
            report(f"{args.name}: {message}", None)

    return ResourceValidationPolicy(rule.name, description, validate_resource, rule.enforcement)


# --- reading properties -------------------------------------------------------------------------------------
def get(props: Any, *path: str | int, default: Any = None) -> Any:
    """`props[path[0]][path[1]]...`, or `default` where a step is missing (unknown values still raise)."""
    value = props
    for step in path:
        if isinstance(step, int):
            if not is_list(value) or step >= len(value):
                return default
        elif not isinstance(value, Mapping) or step not in value:
            return default
        value = value[step]
    return default if value is None else value


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def as_list(value: Any) -> list[Any]:
    """A JSON policy's "one or many" field as a list."""
    if value is None:
        return []
    return list(value) if is_list(value) else [value]


def is_true(value: Any) -> bool:
    """Booleans arrive as bools, or as "true"/"false" strings for the fields the AWS schema types as strings."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def parse_json(value: Any) -> Any:
    """A property the schema types as a JSON string (policies, container definitions), parsed; None if invalid."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def document(value: Any) -> Mapping[str, Any] | None:
    """A policy document (JSON string or object), or None when absent or not valid JSON."""
    value = parse_json(value)
    return value if isinstance(value, Mapping) else None


def statements(doc: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if doc is None:
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, Mapping)]


def allows(statement: Mapping[str, Any]) -> bool:
    return statement.get("Effect") == "Allow"


def of_type(resources: Iterable[PolicyResource], *types: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type in types]


def linked(
    resources: Iterable[PolicyResource], target: PolicyResource, child_type: str, prop: str
) -> Iterator[PolicyResource]:
    """Resources of `child_type` whose `prop` is computed from `target` (e.g. the bucket of a BucketPolicy)."""
    for resource in resources:
        if resource.resource_type == child_type and any(
            dep.urn == target.urn for dep in resource.property_dependencies.get(prop, [])
        ):
            yield resource


S3_BUCKET = "aws:s3/bucket:Bucket"
