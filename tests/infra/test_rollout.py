"""A blue/green rollout of the endpoint, applied as `pulumi up` applies it: a rolled-back one must not delete the
model and endpoint configuration that are serving.

The program is synthesized twice under mocks (before and after `deepcloud:modelArtifact` changes) and the change
between the two is applied to a fake SageMaker by a small model of the engine and the provider. What each encodes,
and its source:

- The Pulumi engine replaces a resource by creating the new one first, updating what depends on it, and deleting
  the old one last (pulumi docs, deleteBeforeReplace: "By default, to minimize downtime, Pulumi creates new
  instances of resources before deleting old ones"); it never calls Delete for an old resource whose state has
  retainOnDelete (docs, retainOnDelete: "Pulumi will not call through to the resource provider's Delete method when
  deleting or replacing the resource"; the CLI counts a retained replacement from `old.State.RetainOnDelete`). A
  failed step stops the update before its deletes.
- terraform-provider-aws, which pulumi-aws wraps (internal/service/sagemaker): every argument of
  aws_sagemaker_model and aws_sagemaker_endpoint_configuration but tags is ForceNew (model.go,
  endpoint_configuration.go), so a new artifact replaces both. resourceEndpointUpdate calls UpdateEndpoint, then
  waitEndpointInService (endpoint.go, not wait.go where the other SageMaker waiters are): Pending Creating,
  Updating, SystemUpdating; Target InService; Timeout 60 minutes; any other status ends it with "unexpected state".
  It then reads the endpoint back (resourceEndpointRead).
- SageMaker: when an alarm fires during a bake, traffic returns to the blue fleet and the endpoint is InService
  again on its old EndpointConfigName, FailureReason possibly empty (terraform-provider-aws #48997, #39099, PR
  #49020). DeleteEndpointConfig does not refuse a configuration in use ("You must not delete an EndpointConfig in
  use by an endpoint", botocore's model of DeleteEndpointConfig), and afterwards every UpdateEndpoint fails with
  "Could not find endpoint configuration" (#48997, #40048).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from tests.infra.harness import Registered, Synthesis, synthesize

MODEL = "aws:sagemaker/model:Model"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
ORDER = (MODEL, CONFIG, ENDPOINT)
"""Dependency order of the three: creates run in it, deletes in reverse."""

PENDING = ("Creating", "Updating", "SystemUpdating")
TARGET = ("InService",)
PROVIDER_TIMEOUT_S = 60 * 60
"""waitEndpointInService in terraform-provider-aws internal/service/sagemaker/endpoint.go."""
POLL_S = 30


class ProviderError(Exception):
    """What the provider reports to the engine; the update stops there."""


class ValidationException(Exception):
    """SageMaker's error for a request it refuses."""


@dataclass
class FakeSageMaker:
    """Models and endpoint configurations by name, one endpoint, and the statuses its next rollout goes through."""

    models: set[str] = field(default_factory=set)
    configs: dict[str, str] = field(default_factory=dict)
    """endpoint configuration -> its model"""
    endpoint_config: str | None = None
    status: str = ""
    failure_reason: str = ""
    rollout: list[tuple[str, str | None]] = field(default_factory=list)
    """(status, config) the next DescribeEndpoint calls report after an UpdateEndpoint; None keeps the config."""

    def create_model(self, name: str) -> None:
        self.models.add(name)

    def create_endpoint_config(self, name: str, model: str) -> None:
        if model not in self.models:
            raise ValidationException(f'Could not find model "{model}"')
        self.configs[name] = model

    def create_endpoint(self, config: str) -> None:
        self._require(config)
        self.endpoint_config, self.status = config, "InService"

    def update_endpoint(self, config: str, *, rolled_back: bool, bake_polls: int = 3) -> None:
        """Blue/green: the green fleet needs the new configuration, a rollback the current one."""
        self._require(self.endpoint_config)
        self._require(config)
        old = self.endpoint_config
        self.status, self.failure_reason = "Updating", ""
        self.rollout = [("Updating", None)] * bake_polls
        if rolled_back:  # an alarm during the bake: back to the blue fleet, InService on the old configuration
            self.rollout.append(("InService", old))
        else:
            self.rollout.append(("InService", config))

    def describe_endpoint(self) -> dict:
        if self.rollout:
            self.status, config = self.rollout.pop(0)
            self.endpoint_config = config or self.endpoint_config
        return {
            "EndpointStatus": self.status,
            "EndpointConfigName": self.endpoint_config,
            "FailureReason": self.failure_reason,
        }

    def delete_endpoint_config(self, name: str) -> None:
        self.configs.pop(name)  # SageMaker does not refuse one in use (botocore's DeleteEndpointConfig text)

    def delete_model(self, name: str) -> None:
        self.models.discard(name)

    def serving(self) -> tuple[str | None, str | None]:
        """(the endpoint's configuration, its model) where they still exist, else None."""
        model = self.configs.get(self.endpoint_config or "")
        return (
            self.endpoint_config if self.endpoint_config in self.configs else None,
            model if model in self.models else None,
        )

    def _require(self, config: str | None) -> None:
        if config not in self.configs:
            raise ValidationException(f'Could not find endpoint configuration "{config}"')


def wait_endpoint_in_service(sagemaker: FakeSageMaker) -> dict:
    """terraform-provider-aws waitEndpointInService: poll until a Target status, fail on one neither Pending nor
    Target, give up after 60 minutes. A rolled-back endpoint is InService: success."""
    waited = 0
    while True:
        endpoint = sagemaker.describe_endpoint()
        if endpoint["EndpointStatus"] in TARGET:
            return endpoint
        if endpoint["EndpointStatus"] not in PENDING:
            raise ProviderError(f"unexpected state '{endpoint['EndpointStatus']}', wanted target 'InService'")
        if waited >= PROVIDER_TIMEOUT_S:
            raise ProviderError(f"timeout while waiting for state to become 'InService' (timeout: {waited // 60}m0s)")
        waited += POLL_S


@dataclass
class Engine:
    """`pulumi up` for the three SageMaker resources: state by URN (physical name, registration)."""

    sagemaker: FakeSageMaker
    rolled_back: bool = False
    state: dict[str, tuple[str, Registered]] = field(default_factory=dict)
    names: itertools.count = field(default_factory=lambda: itertools.count(1))

    def up(self, stack: Synthesis) -> None:
        goal = {r.urn: r for r in stack.resources if r.type in ORDER}
        deletes: list[tuple[str, Registered]] = []
        physical: dict[str, str] = {}
        prior = {urn: name for urn, (name, _) in self.state.items()}
        for kind in ORDER:
            for urn, new in goal.items():
                if new.type != kind:
                    continue
                old = self.state.get(urn)
                if kind == ENDPOINT:
                    self._endpoint(new, old, physical)
                elif old is None or self._replaces(old[1], new, physical, prior):
                    name = f"{new.name}-{next(self.names)}"  # auto-naming gives the replacement a new name
                    self._create(new, name, physical)
                    if old is not None:
                        deletes.append(old)
                    self.state[urn] = (name, new)
                else:
                    physical[urn] = old[0]
        deletes += [self.state.pop(urn) for urn in list(self.state) if urn not in goal]
        for name, old in sorted(deletes, key=lambda d: -ORDER.index(d[1].type)):
            if old.retain_on_delete:
                continue  # removed from the state only
            if old.type == CONFIG:
                self.sagemaker.delete_endpoint_config(name)
            elif old.type == MODEL:
                self.sagemaker.delete_model(name)

    @staticmethod
    def _replaces(old: Registered, new: Registered, physical: dict[str, str], prior: dict[str, str]) -> bool:
        """ForceNew on every argument but tags; a dependency's replacement changes the name this one refers to."""
        changed = {
            k
            for k in old.inputs.keys() | new.inputs.keys()
            if k not in ("tags", "tagsAll") and old.inputs.get(k) != new.inputs.get(k)
        }
        moved = any(
            physical[dep] != prior.get(dep)
            for deps in new.property_dependencies.values()
            for dep in deps
            if dep in physical
        )
        return bool(changed) or moved

    def _create(self, new: Registered, name: str, physical: dict[str, str]) -> None:
        if new.type == MODEL:
            self.sagemaker.create_model(name)
        else:
            (model_urn,) = [u for u in new.property_dependencies["productionVariants"] if u in physical]
            self.sagemaker.create_endpoint_config(name, physical[model_urn])
        physical[new.urn] = name

    def _endpoint(self, new: Registered, old: tuple[str, Registered] | None, physical: dict[str, str]) -> None:
        (config_urn,) = new.property_dependencies["endpointConfigName"]
        config = physical[config_urn]
        if old is None:
            self.sagemaker.create_endpoint(config)
        elif old[0] != config:  # resourceEndpointUpdate: UpdateEndpoint, the waiter, then Read
            try:
                self.sagemaker.update_endpoint(config, rolled_back=self.rolled_back)
            except ValidationException as exc:
                raise ProviderError(f"updating SageMaker AI Endpoint: {exc}") from None
            config = wait_endpoint_in_service(self.sagemaker)["EndpointConfigName"]
        self.state[new.urn] = (config, new)


def deploy(run: str) -> Synthesis:
    return synthesize({"modelArtifact": f"models/{run}/model.tar.gz"}, stack="rollout")


def test_the_providers_wait_takes_a_rolled_back_endpoint_for_success() -> None:
    """Why ops, not `pulumi up`, must tell a rollback from a rollout (ops/aws/deploy.py)."""
    sagemaker = FakeSageMaker()
    sagemaker.create_model("a")
    sagemaker.create_endpoint_config("blue", "a")
    sagemaker.create_model("b")
    sagemaker.create_endpoint_config("green", "b")
    sagemaker.create_endpoint("blue")
    sagemaker.update_endpoint("green", rolled_back=True)
    assert wait_endpoint_in_service(sagemaker)["EndpointConfigName"] == "blue"


def test_a_rolled_back_rollout_keeps_the_model_and_config_that_serve() -> None:
    sagemaker = FakeSageMaker()
    engine = Engine(sagemaker)
    engine.up(deploy("run-a"))
    serving_before = sagemaker.serving()
    assert None not in serving_before

    engine.rolled_back = True  # the new model trips an alarm during its canary bake
    engine.up(deploy("run-b"))

    assert sagemaker.endpoint_config == serving_before[0], "SageMaker rolled the endpoint back"
    assert sagemaker.serving() == serving_before, (
        "pulumi up deleted the model and endpoint configuration the rolled-back endpoint still serves"
    )
    engine.rolled_back = False
    engine.up(deploy("run-c"))  # every later update needs the serving configuration (#48997)
    assert sagemaker.configs[sagemaker.endpoint_config] in sagemaker.models


def test_a_completed_rollout_leaves_the_superseded_ones_to_ops() -> None:
    """retainOnDelete keeps every replaced model and configuration; ops deletes those no endpoint uses once
    DescribeEndpoint shows the rollout through (tests/ops/test_aws_deploy.py)."""
    sagemaker = FakeSageMaker()
    engine = Engine(sagemaker)
    engine.up(deploy("run-a"))
    old_config, old_model = sagemaker.serving()
    engine.up(deploy("run-b"))
    assert sagemaker.endpoint_config != old_config
    assert None not in sagemaker.serving()
    assert old_config in sagemaker.configs
    assert old_model in sagemaker.models


@pytest.mark.parametrize("kind", [MODEL, CONFIG])
def test_model_and_config_are_retained_on_delete(kind: str) -> None:
    stack = deploy("run-a")
    (resource,) = stack.of_type(kind)
    assert resource.retain_on_delete


def test_the_provider_gives_up_on_a_rollout_after_60_minutes() -> None:
    """What the rollout_seconds check of infra/config/checks.py keeps a configuration from reaching."""
    sagemaker = FakeSageMaker()
    sagemaker.create_model("a")
    sagemaker.create_endpoint_config("blue", "a")
    sagemaker.create_endpoint("blue")
    sagemaker.update_endpoint("blue", rolled_back=False, bake_polls=PROVIDER_TIMEOUT_S // POLL_S + 2)
    with pytest.raises(ProviderError, match=r"timeout while waiting for state to become 'InService' \(timeout: 60m"):
        wait_endpoint_in_service(sagemaker)
