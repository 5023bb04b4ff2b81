"""Run the Pulumi program (infra/__main__.py) in this process under Pulumi's mocks, offline, and keep what it declares.

`pulumi.runtime.set_mocks` swaps the engine for an in-process monitor, so the real program runs exactly as `pulumi up`
would run it (runpy on infra/, run_name __main__) with no CLI, plugin or AWS: resources are "created" by
`AwsMocks.new_resource`, which echoes the inputs and adds the outputs AWS would compute (ids, ARNs, auto-generated
names). A recording monitor keeps each RegisterResource request, so callers see the inputs exactly as the engine
would (camelCase, JSON-able), plus parent, provider, protect, retainOnDelete, ignoreChanges and the property
dependencies.

Two callers: the tests (tests/infra/harness.py, which also builds the policy pack's view of the stack from this), and
`python -m infra.cli cost`, which prices what the program declares for a config before anything exists.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import runpy
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import Stack, run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

# Importing a pulumi-aws service package imports all its modules, and the deprecated ones (s3.BucketV2, ...) warn
# at import; the program uses none of them, so import the packages it uses here, quietly, once.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for _service in (
        "appautoscaling",
        "autoscaling",
        "cloudwatch",
        "ec2",
        "ecr",
        "ecs",
        "iam",
        "kms",
        "lambda_",
        "s3",
        "sagemaker",
    ):
        hasattr(importlib.import_module(f"pulumi_aws.{_service}"), "load")  # the first attribute lookup loads it

REPO = Path(__file__).resolve().parent.parent
PROGRAM = REPO / "infra" / "__main__.py"
PROJECT = "deepcloud"
ACCOUNT = "123456789012"
"""The account id the mocks answer with (no AWS call is made)."""
ECS_SERVICE_LINKED_ROLE = "/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"
"""Path and name of the role ECS uses in an account that has already used ECS."""


@dataclass
class Registered:
    """One RegisterResource request and the mock's answer."""

    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    parent: str
    provider: str
    protect: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


def _short_hash(text: str, length: int = 17) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class AwsMocks(pulumi.runtime.Mocks):
    """Answers like AWS would, deterministically: physical names are `<logical name>-<7 hex>`. `roles` are the IAM
    roles the account already has (aws.iam.get_roles answers from them: a fresh account has none)."""

    def __init__(self, region: str, roles: tuple[str, ...] = ()) -> None:
        self.region = region
        self.roles = roles
        self.invokes: list[str] = []

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        """The invoke's result and no failures (the (result, failures) pair Pulumi's Mocks.call returns)."""
        return self._answer(args), []  # no failures; MockMonitor iterates them, so an empty list rather than None

    def _answer(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        invoked = args.token
        self.invokes.append(invoked)
        if invoked == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
                "userId": "AIDA",
                "id": ACCOUNT,
            }
        if invoked == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws", "id": "aws"}
        if invoked == "aws:iam/getRoles:getRoles":
            # IAM ListRoles filtered by path prefix, then the provider's name_regex (data_source_iam_roles.go)
            prefix, pattern = args.args.get("pathPrefix", "/"), args.args.get("nameRegex", "")
            names = sorted(
                name.rsplit("/", 1)[1]
                for name in self.roles
                if name.startswith(prefix) and re.search(pattern, name.rsplit("/", 1)[1])
            )
            return {
                "names": names,
                "arns": [f"arn:aws:iam::{ACCOUNT}:role{prefix}{n}" for n in names],
                "id": self.region,
            }
        if invoked == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = [f"{self.region}{letter}" for letter in "abc"]  # what the program reads: names, one per zone
            return {"names": zones, "zoneIds": [f"az{i + 1}" for i in range(len(zones))], "id": self.region}
        raise NotImplementedError(f"the mocks do not answer the invoke {args.token}; add it to tests/infra/harness.py")

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider-id", state
        physical = f"{args.name}-{_short_hash(args.typ + args.name, 7)}"
        module, kind = args.typ.split(":")[1].split("/")[0], args.typ.rsplit(":", 1)[-1]
        ident = f"{args.name}-id"
        region, account = self.region, ACCOUNT
        if kind == "Bucket":
            bucket = state.setdefault("bucket", physical)
            return bucket, {**state, "arn": f"arn:aws:s3:::{bucket}", "id": bucket}
        if kind in (
            "Vpc",
            "Subnet",
            "SecurityGroup",
            "DefaultSecurityGroup",
            "RouteTable",
            "LaunchTemplate",
            "VpcEndpoint",
        ):
            prefix = {
                "Vpc": "vpc",
                "Subnet": "subnet",
                "SecurityGroup": "sg",
                "DefaultSecurityGroup": "sg",
                "RouteTable": "rtb",
                "LaunchTemplate": "lt",
                "VpcEndpoint": "vpce",
            }[kind]
            ident = f"{prefix}-{_short_hash(args.name)}"
            arn = f"arn:aws:ec2:{region}:{account}:{kind.lower()}/{ident}"
            return ident, {**state, "id": ident, "arn": arn, "latestVersion": 1}
        name = state.get("name") or physical
        state["name"] = name
        arn = {
            "iam": f"arn:aws:iam::{account}:{kind[0].lower() + kind[1:]}/{name}",
            "s3": f"arn:aws:s3:::{name}",
        }.get(module, f"arn:aws:{module}:{region}:{account}:{kind.lower()}/{name}")
        if kind == "Key":
            key_id = _short_hash(args.name, 32)
            return key_id, {**state, "keyId": key_id, "arn": f"arn:aws:kms:{region}:{account}:key/{key_id}"}
        if kind == "Repository":
            state["repositoryUrl"] = f"{account}.dkr.ecr.{region}.amazonaws.com/{name}"
        if kind == "TaskDefinition":
            arn = f"arn:aws:ecs:{region}:{account}:task-definition/{state['family']}:1"
            state["revision"] = 1
        if kind == "LogGroup":
            arn = f"arn:aws:logs:{region}:{account}:log-group:{name}"
        return ident, {**state, "arn": arn, "id": ident}


class RecordingMonitor(MockMonitor):
    """The mock monitor, keeping every RegisterResource request it answers."""

    def __init__(self, mocks: AwsMocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources[response.urn]
            self.registered.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=request.custom,
                    inputs=rpc.deserialize_properties(request.object),
                    parent=request.parent,
                    provider=request.provider,
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    ignore_changes=list(request.ignoreChanges),
                    dependencies=list(request.dependencies),
                    property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                    id=registration.id or "",
                    outputs=dict(registration.state),
                )
            )
        return response


def run_program(
    values: Mapping[str, str],
    stack: str = "dev",
    region: str = "eu-west-1",
    roles: tuple[str, ...] = (ECS_SERVICE_LINKED_ROLE,),
) -> tuple[list[Registered], dict[str, Any], list[str], float]:
    """Run infra/__main__.py once under mocks with `deepcloud:` config `values` (keys without namespace), in an
    account that has the IAM `roles` (path and name); (what it registered, its stack outputs, the invokes it made,
    seconds taken). A bad config raises the program's ConfigError."""
    config = {f"{PROJECT}:{key}": value for key, value in values.items()}
    if region:
        config["aws:region"] = region
    mocks = AwsMocks(region, roles)
    monitor = RecordingMonitor(mocks)
    settings.ROOT.set(None)  # a fresh Stack resource for each run
    pulumi.runtime.set_all_config(config)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(PROGRAM.parent), run_name="__main__")
        root = settings.get_root_resource()
        if not isinstance(root, Stack):
            raise RuntimeError(f"the program ran without a Stack resource at its root ({root!r})")
        exported = root.outputs
        resolved: dict[str, Any] | None = _sync_await(pulumi.Output.from_input(exported).future())
        outputs.update(resolved or {})

    start = time.perf_counter()
    _sync_await(run_pulumi_func(program))
    seconds = time.perf_counter() - start
    return monitor.registered, outputs, mocks.invokes, seconds
