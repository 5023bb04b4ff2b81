"""Entry point of the policy pack: `pulumi preview --policy-pack infra/policy` runs this file.

Every rule is mandatory (a violation stops the update) unless it says otherwise; infra/policy/waivers.toml
lists the resources exempted from a rule, each with its reason.
"""

import sys
from pathlib import Path

# Pulumi runs the pack directory with runpy, so only infra/policy/ is on sys.path; add the repository root.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from infra.policy import PACK_NAME, policies  # noqa: E402

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
