"""The policy pack infra/policy, offline: every rule against its PASSED and FAILED fixtures, then the stack itself.

Fixtures follow Checkov's layout: policy_fixtures/<rule>/PASSED.json holds resources the rule must accept,
FAILED.json resources among which exactly those marked `"fails": true` must be reported. A fixture resource is
{type, name, props (camelCase, as the engine passes them), deps (property -> names of the resources it is
computed from), provider (name of a pulumi:providers:aws resource)}. The rules run through the pulumi-policy
objects `pulumi preview --policy-pack infra/policy` calls, with props wrapped in the SDK's unknown-value proxy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyProviderResource,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from infra.policy import PACK_NAME, RULES, Waiver, load_waivers, policies
from tests.infra.harness import REPO, Synthesis, options_of, synthesize

FIXTURES = Path(__file__).with_name("policy_fixtures")
RULE_NAMES = [rule.name for rule in RULES]


def _urn(resource_type: str, name: str) -> str:
    return f"urn:pulumi:fixture::deepcloud::{resource_type}::{name}"


def fixture_resources(entries: Sequence[dict]) -> list[PolicyResource]:
    """PolicyResources for fixture entries, with providers and property dependencies linked by name."""
    made = {}
    assert len({e["name"] for e in entries}) == len(entries), "fixture resource names must be unique"
    for e in entries:
        made[e["name"]] = PolicyResource(
            e["type"],
            unknown_checking_proxy(e["props"]),
            _urn(e["type"], e["name"]),
            e["name"],
            None,
            None,
            None,
            [],
            {},
        )
    for e in entries:
        resource = made[e["name"]]
        resource.property_dependencies = {prop: [made[n] for n in names] for prop, names in e.get("deps", {}).items()}
        resource.dependencies = [d for deps in resource.property_dependencies.values() for d in deps]
        if "provider" in e:
            source = made[e["provider"]]
            resource.provider = PolicyProviderResource(source.resource_type, source.props, source.urn, source.name)
    return list(made.values())


def run(policy, resources: Sequence[PolicyResource]) -> list[tuple[str, str]]:
    """(urn, message) for each violation `policy` reports over `resources`, validated as the engine does."""
    found: list[tuple[str, str]] = []
    if isinstance(policy, StackValidationPolicy):
        policy.validate(StackValidationArgs(list(resources)), lambda message, urn=None: found.append((urn, message)))
        return found
    assert isinstance(policy, ResourceValidationPolicy)
    for r in resources:
        args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, r.provider)
        policy.validate(args, lambda message, urn=None, at=r.urn: found.append((urn or at, message)))
    return found


def by_name(waivers: list[Waiver] | None = None) -> dict:
    return {policy.name: policy for policy in policies(waivers)}


# --- the pack ------------------------------------------------------------------------------------------------
def test_every_rule_is_named_once_described_and_sourced() -> None:
    assert len(RULE_NAMES) == len(set(RULE_NAMES))
    for rule in RULES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", rule.name), rule.name
        assert rule.description
        assert rule.references, f"{rule.name} names no Checkov / FSBP / AWS Config check"
    advisory = {rule.name for rule in RULES if rule.enforcement is EnforcementLevel.ADVISORY}
    assert advisory == {"sagemaker-endpoint-redundancy"}, "everything else blocks a deployment"


def test_policy_pack_project_runs_in_the_project_venv() -> None:
    pack = REPO / "infra" / "policy"
    project = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    venv = (pack / project["runtime"]["options"]["virtualenv"]).resolve()
    assert venv == REPO / ".venv"
    main = (pack / "__main__.py").read_text()
    assert "PolicyPack(name=PACK_NAME" in main
    assert "EnforcementLevel.MANDATORY" in main
    assert re.fullmatch(r"[a-zA-Z0-9._-]{1,100}", PACK_NAME)


# --- fixtures ------------------------------------------------------------------------------------------------
def test_every_rule_has_passed_and_failed_fixtures_and_nothing_else() -> None:
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(RULE_NAMES)
    for name in RULE_NAMES:
        assert sorted(p.name for p in (FIXTURES / name).iterdir()) == ["FAILED.json", "PASSED.json"]


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_passed_fixture_passes(rule: str) -> None:
    entries = json.loads((FIXTURES / rule / "PASSED.json").read_text())
    assert not [e for e in entries if e.get("fails")]
    assert run(by_name([])[rule], fixture_resources(entries)) == []


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_failed_fixture_fails_exactly_where_marked(rule: str) -> None:
    entries = json.loads((FIXTURES / rule / "FAILED.json").read_text())
    expected = {_urn(e["type"], e["name"]) for e in entries if e.get("fails")}
    assert expected, f"{rule}/FAILED.json marks no failing resource"
    assert len(expected) < len(entries), f"{rule}/FAILED.json needs a passing resource next to the failing ones"
    found = run(by_name([])[rule], fixture_resources(entries))
    assert {urn for urn, _ in found} == expected
    for urn, message in found:
        assert message.startswith(urn.rsplit("::", 1)[1] + ": "), f"{rule}: the message must name the resource"


def test_an_unknown_value_during_preview_is_not_a_violation() -> None:
    """pulumi-policy turns UnknownValueError into "can't run during preview"; rules must not swallow it."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

    key = fixture_resources(
        [{"type": "aws:kms/key:Key", "name": "k", "props": {"enableKeyRotation": True, "policy": UNKNOWN_STRING_VALUE}}]
    )
    with pytest.raises(UnknownValueError):
        run(by_name([])["kms-key-policy"], key)


# --- the synthesized stack -----------------------------------------------------------------------------------
def stack_violations(stack: Synthesis, waivers: list[Waiver] | None = None) -> list[tuple[str, str, str]]:
    """(rule, urn, message) over a synthesized stack: resource rules see inputs (Analyze), stack rules see the
    registered state with its dependencies (AnalyzeStack), each through the unknown-value proxy."""
    stack_resources = stack.policy_resources()
    for r in stack_resources:
        r.props = unknown_checking_proxy(dict(r.props))
    inputs = [
        PolicyResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name, options_of(r), s.provider, None, [], {})
        for r, s in zip(stack.resources, stack_resources, strict=True)
    ]
    found = []
    for name, policy in by_name(waivers).items():
        over = stack_resources if isinstance(policy, StackValidationPolicy) else inputs
        found += [(name, urn, message) for urn, message in run(policy, over)]
    return found


def test_the_synthesized_stack_passes_every_rule(any_stack: Synthesis) -> None:
    assert stack_violations(any_stack) == []


@pytest.mark.parametrize(
    "values",
    [
        {"forceDestroy": "true", "protectDataBucket": "false"},
        {"modelArtifact": "models/job-1/model.tar.gz", "endpointInstanceType": "ml.g5.xlarge"},
        {
            "modelArtifact": "models/job-1/model.tar.gz",
            "rollout": "LINEAR",
            "vpcId": "vpc-0abc1234def567890",
            "subnetIds": "subnet-0aaa1111bbbb22223,subnet-0ccc3333dddd44445",
        },
    ],
    ids=["force-destroy", "gpu-endpoint", "linear-existing-vpc"],
)
def test_other_configurations_pass_every_rule(values: dict[str, str]) -> None:
    assert stack_violations(synthesize(values, stack="variant")) == []


def test_a_fresh_account_stack_passes_every_rule() -> None:
    """With the ECS service-linked role the program creates where the account has none."""
    assert stack_violations(synthesize({}, stack="fresh", roles=())) == []


def test_the_endpoint_modes_and_network_profiles_pass_every_rule(
    serverless_stack: Synthesis, async_stack: Synthesis
) -> None:
    """serverless on the on-demand network profile (with the serverless waivers), async scaling to zero with a budget;
    and the on-demand profile while its endpoints are up."""
    assert stack_violations(serverless_stack) == []
    assert stack_violations(async_stack) == []
    up = synthesize({"networkProfile": "on-demand", "interfaceEndpointsUp": "true"}, stack="up")
    assert stack_violations(up) == []


def test_the_multi_model_endpoint_passes_every_rule_without_a_waiver(multi_model_stack: Synthesis) -> None:
    """In the VPC, isolated, its volume under the stack's key, blue/green with rollback: without waivers, only the
    access-log bucket's (every stack's) violations remain, none of the endpoint's."""
    assert stack_violations(multi_model_stack) == []
    unwaived = {urn.rsplit("::", 1)[1] for _, urn, _ in stack_violations(multi_model_stack, [])}
    assert unwaived == {"store-access-logs"}


def test_each_waiver_is_needed_and_explained(
    default_stack: Synthesis, serverless_stack: Synthesis, async_stack: Synthesis
) -> None:
    """Over the stacks the waivers exist for: every violation is covered by exactly one waiver, and every waiver
    covers at least one violation (the serverless ones only the serverless stack's, the async one the async's)."""
    waivers = load_waivers()
    unwaived = [v for stack in (default_stack, serverless_stack, async_stack) for v in stack_violations(stack, [])]

    def covering(rule: str, urn: str) -> list[Waiver]:
        return [w for w in waivers if w.covers(rule, urn.split("::")[-2].split("$")[-1], urn.rsplit("::", 1)[1])]

    for waiver in waivers:
        assert waiver.rule in RULE_NAMES, f"waiver for unknown rule {waiver.rule}"
        assert len(waiver.reason) > 40, f"waiver of {waiver.rule} needs a reason"
        assert any(waiver in covering(rule, urn) for rule, urn, _ in unwaived), (
            f"waiver of {waiver.rule} for {waiver.name} matches no violation: remove it"
        )
    for rule, urn, message in unwaived:
        assert len(covering(rule, urn)) == 1, f"{rule}: {message} is covered by {len(covering(rule, urn))} waivers"


def test_serverless_waivers_cover_only_the_serverless_endpoint(model_stack: Synthesis) -> None:
    """A realtime model outside the VPC is still refused: the waivers name the serverless resources only."""
    import copy

    weakened = copy.deepcopy(model_stack)
    model = weakened.one("aws:sagemaker/model:Model")
    del model.inputs["vpcConfig"]
    model.inputs["enableNetworkIsolation"] = False
    rules = {rule for rule, _, _ in stack_violations(weakened)}
    assert rules == {"sagemaker-model-in-vpc", "sagemaker-network-isolation"}


def test_a_weakened_stack_is_caught(default_stack: Synthesis) -> None:
    """The stack passing is meaningful: flip one setting in its registered resources and a rule fires."""
    import copy

    weakened = copy.deepcopy(default_stack)
    template = weakened.one("aws:ec2/launchTemplate:LaunchTemplate")
    template.inputs["metadataOptions"]["httpTokens"] = "optional"
    repo = weakened.one("aws:ecr/repository:Repository", "trainer")
    repo.inputs["imageTagMutability"] = "MUTABLE"
    rules = {rule for rule, _, _ in stack_violations(weakened)}
    assert rules == {"ec2-imdsv2", "ecr-immutable-tags"}


def test_an_async_endpoint_that_could_not_scale_back_out_is_caught(async_stack: Synthesis) -> None:
    """Without the HasBacklogWithoutCapacity alarm, an async endpoint at zero instances would stay there."""
    import copy

    weakened = copy.deepcopy(async_stack)
    weakened.resources = [r for r in weakened.resources if not r.name.endswith("backlog-without-capacity")]
    config = weakened.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration")
    del config.inputs["asyncInferenceConfig"]["outputConfig"]["kmsKeyId"]
    rules = {rule for rule, _, _ in stack_violations(weakened)}
    assert rules == {"sagemaker-scale-out-from-zero", "sagemaker-async-output-encrypted"}
