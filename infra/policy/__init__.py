"""The deepcloud policy pack: one rule per applicable Checkov / AWS Foundational Security Best Practices /
Pulumi AWSGuard check, run by `pulumi preview --policy-pack infra/policy` and, offline, by the tests.

Rules live in the modules below by service; importing them registers them in `RULES`. Exceptions are not
coded into rules but listed, with their reasons, in waivers.toml.
"""

from __future__ import annotations

from pulumi_policy import Policy

from infra.policy import compute, cost, iam, s3, sagemaker, tags  # noqa: F401 - importing registers the rules
from infra.policy._core import RULES, Rule, Waiver, load_waivers, to_policy

PACK_NAME = "deepcloud-aws"


def policies(waivers: list[Waiver] | None = None) -> list[Policy]:
    """Every rule as the pulumi-policy object the engine calls, with waivers applied."""
    active = load_waivers() if waivers is None else waivers
    return [to_policy(rule, active) for rule in RULES]


__all__ = ["PACK_NAME", "RULES", "Rule", "Waiver", "load_waivers", "policies"]
