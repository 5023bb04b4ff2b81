"""IAM: least privilege in every identity policy, specific trust, no admin policies, and KMS key hygiene."""

from __future__ import annotations

import re
from collections.abc import Iterator

from infra.policy._core import allows, as_list, document, get, is_true, resource_rule, statements

IDENTITY_POLICIES = (
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/policy:Policy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
    "aws:iam/role:Role",
)
ATTACHMENTS = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
    "aws:iam/role:Role",
)
UNRESTRICTABLE_ACTIONS = frozenset(
    {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcs",
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
    }
)
"""Actions the IAM Service Authorization Reference lists without resource types, so they can only be granted
on Resource "*". Any other action granted on "*" is a violation."""
ADMIN_POLICIES = re.compile(r"arn:[\w-]+:iam::aws:policy/(.*/)?(AdministratorAccess|PowerUserAccess|\w*FullAccess)$")
SERVICE_PRINCIPAL = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.amazonaws\.com(\.cn)?")


def _identity_documents(resource) -> Iterator:
    """The identity policy documents a resource carries (a Role's inline policies, or a policy resource's)."""
    if resource.resource_type == "aws:iam/role:Role":
        for inline in as_list(get(resource.props, "inlinePolicies")):
            yield document(get(inline, "policy"))
    else:
        yield document(get(resource.props, "policy"))


def _allow_statements(resource) -> Iterator:
    for doc in _identity_documents(resource):
        yield from (s for s in statements(doc) if allows(s))


@resource_rule(
    "iam-no-wildcard-actions",
    'Identity policies grant no "*" or "service:*" actions and no NotAction',
    IDENTITY_POLICIES,
    ["Checkov CKV_AWS_62, CKV_AWS_63", "AWS FSBP IAM.1, IAM.21"],
)
def no_wildcard_actions(resource) -> Iterator[str]:
    for s in _allow_statements(resource):
        if "NotAction" in s:
            yield f"statement {s.get('Sid', '(no Sid)')} uses NotAction with Allow"
        wild = [a for a in as_list(s.get("Action")) if a == "*" or str(a).endswith(":*")]
        if wild:
            yield f"statement {s.get('Sid', '(no Sid)')} allows {', '.join(wild)}"


@resource_rule(
    "iam-no-wildcard-resources",
    'Identity policies grant actions on Resource "*" only where IAM allows nothing narrower',
    IDENTITY_POLICIES,
    ["Checkov CKV_AWS_355, CKV_AWS_290", "AWS FSBP IAM.21"],
)
def no_wildcard_resources(resource) -> Iterator[str]:
    for s in _allow_statements(resource):
        if "NotResource" in s:
            yield f"statement {s.get('Sid', '(no Sid)')} uses NotResource with Allow"
        if "*" in as_list(s.get("Resource")):
            restrictable = sorted(str(a) for a in as_list(s.get("Action")) if a not in UNRESTRICTABLE_ACTIONS)
            if restrictable:
                yield (
                    f'statement {s.get("Sid", "(no Sid)")} grants {", ".join(restrictable)} on Resource "*"; '
                    "name the resources"
                )


@resource_rule(
    "iam-no-admin-policies",
    "No AWS managed administrator, power-user or *FullAccess policy is attached",
    ATTACHMENTS,
    ["Checkov CKV_AWS_274, CKV2_AWS_56", "AWS FSBP IAM.1"],
)
def no_admin_policies(resource) -> Iterator[str]:
    if resource.resource_type == "aws:iam/role:Role":
        arns = as_list(get(resource.props, "managedPolicyArns"))
    else:
        arns = [get(resource.props, "policyArn")]
    for arn in arns:
        if isinstance(arn, str) and ADMIN_POLICIES.fullmatch(arn):
            yield f"attaches {arn}"


@resource_rule(
    "iam-service-principals",
    'Roles trust only named AWS service principals, never "*"',
    ["aws:iam/role:Role"],
    ["Checkov CKV_AWS_60, CKV_AWS_61"],
)
def service_principals(resource) -> Iterator[str]:
    trust = document(get(resource.props, "assumeRolePolicy"))
    allowed = [s for s in statements(trust) if allows(s)]
    if not allowed:
        yield "has no assume-role policy that allows anything"
    for s in allowed:
        principal = s.get("Principal")
        services = as_list(get(principal, "Service"))
        if principal == "*" or not services or not isinstance(principal, dict) or set(principal) != {"Service"}:
            yield f"trust statement {s.get('Sid', '(no Sid)')} must name AWS service principals only"
        for service in services:
            if not (isinstance(service, str) and SERVICE_PRINCIPAL.fullmatch(service)):
                yield f"trust statement names {service!r}, not a specific service principal"


@resource_rule(
    "ecs-distinct-task-roles",
    "ECS task definitions give the code a task role distinct from the execution role",
    ["aws:ecs/taskDefinition:TaskDefinition"],
    ["Checkov CKV_AWS_249"],
)
def distinct_task_roles(resource) -> Iterator[str]:
    task, execution = get(resource.props, "taskRoleArn"), get(resource.props, "executionRoleArn")
    if not task or not execution:
        yield "needs both taskRoleArn and executionRoleArn"
    elif task == execution:
        yield "taskRoleArn and executionRoleArn are the same role"


@resource_rule(
    "kms-key-rotation",
    "KMS keys rotate their key material",
    ["aws:kms/key:Key"],
    ["Checkov CKV_AWS_7", "AWS FSBP KMS.4"],
)
def key_rotation(resource) -> Iterator[str]:
    if get(resource.props, "customerMasterKeySpec", default="SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT":
        return  # only symmetric keys can rotate
    if not is_true(get(resource.props, "enableKeyRotation")):
        yield "needs enableKeyRotation true"


@resource_rule(
    "kms-key-policy",
    'KMS keys have an explicit key policy that grants nothing to "*" unconditionally',
    ["aws:kms/key:Key"],
    ["Checkov CKV2_AWS_64, CKV_AWS_33"],
)
def key_policy(resource) -> Iterator[str]:
    doc = document(get(resource.props, "policy"))
    if doc is None or not statements(doc):
        yield "needs an explicit key policy"
        return
    for s in statements(doc):
        principal = s.get("Principal")
        if allows(s) and (principal == "*" or "*" in as_list(get(principal, "AWS"))) and not s.get("Condition"):
            yield f"key policy statement {s.get('Sid', '(no Sid)')} allows any principal"
