"""Entry point of the policy pack: `pulumi preview --policy-pack infra/policy` runs this file.

Pulumi runs the pack's folder with only that folder on sys.path; `infra` imports because make setup installs the
project into .venv (PulumiPolicy.yaml runs the pack in it).

Every rule is mandatory (a violation stops the update) unless it says otherwise; infra/policy/waivers.toml
lists the resources exempted from a rule, each with its reason.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy import PACK_NAME, policies

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
