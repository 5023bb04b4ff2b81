"""Tags: every AWS resource carries deepcloud:stack, so a later destroy can audit what is left by tag.

The provider's default tags reach every taggable resource it manages except what Auto Scaling launches,
so groups must propagate the tag and launch templates must stamp it on instances and volumes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import PolicyResource

from infra.engine import STACK_TAG
from infra.policy._core import as_list, get, is_true, parse_json, stack_rule


def _provider_tag(resource: PolicyResource) -> str | None:
    if resource.provider is None:
        return None
    tags = get(parse_json(get(resource.provider.props, "defaultTags")), "tags")
    return get(tags, STACK_TAG)


@stack_rule(
    "stack-tag",
    f"AWS resources carry the {STACK_TAG} tag (provider default tags; propagated to "
    "Auto Scaling instances and volumes)",
    ["AWS Tagging Best Practices", "Pulumi AWSGuard required tags"],
)
def stack_tag(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for resource in resources:
        if not resource.resource_type.startswith("aws:"):
            continue
        if not _provider_tag(resource):
            yield resource, f"its AWS provider has no default tag {STACK_TAG}"
        if resource.resource_type == "aws:autoscaling/group:Group":
            tags = [t for t in as_list(get(resource.props, "tags")) if get(t, "key") == STACK_TAG]
            if not any(get(t, "value") and is_true(get(t, "propagateAtLaunch")) for t in tags):
                yield resource, f"needs the {STACK_TAG} tag with propagateAtLaunch (default tags skip instances)"
        if resource.resource_type == "aws:ec2/launchTemplate:LaunchTemplate":
            tagged = {
                get(spec, "resourceType")
                for spec in as_list(get(resource.props, "tagSpecifications"))
                if get(spec, "tags", STACK_TAG)
            }
            missing = {"instance", "volume"} - tagged
            if missing:
                yield resource, f"tagSpecifications must stamp {STACK_TAG} on {', '.join(sorted(missing))}"
