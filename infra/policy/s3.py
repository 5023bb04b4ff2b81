"""S3: every bucket private, encrypted (with KMS), versioned, TLS-only, lifecycle-managed and logged.

pulumi-aws 7 keeps each of these settings in its own resource, so these are stack rules: for every bucket
they look for the setting resources whose `bucket` property depends on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import PolicyResource

from infra.policy._core import (
    S3_BUCKET,
    allows,
    as_list,
    document,
    get,
    is_true,
    linked,
    of_type,
    stack_rule,
    statements,
)

PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _settings(resources: Sequence[PolicyResource], bucket: PolicyResource, kind: str) -> list[PolicyResource]:
    """The bucket's setting resources of `kind` (BucketVersioning, ...): those whose `bucket` comes from it."""
    return list(linked(resources, bucket, f"aws:s3/{kind[0].lower() + kind[1:]}:{kind}", "bucket"))


def _setting_values(resources: Sequence[PolicyResource], bucket: PolicyResource, kind: str, *path: str) -> list:
    """One property (at `path`) of each of the bucket's `kind` settings."""
    return [get(setting.props, *path) for setting in _settings(resources, bucket, kind)]


@stack_rule(
    "s3-public-access-block",
    "S3 buckets block every form of public access (all four flags)",
    ["Checkov CKV2_AWS_6, CKV_AWS_53, CKV_AWS_54, CKV_AWS_55, CKV_AWS_56", "AWS FSBP S3.8"],
)
def public_access_block(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        blocks = _settings(resources, bucket, "BucketPublicAccessBlock")
        if not blocks:
            yield bucket, "has no BucketPublicAccessBlock"
        for block in blocks:
            off = [flag for flag in PUBLIC_ACCESS_FLAGS if not is_true(get(block.props, flag))]
            if off:
                yield bucket, f"public access block leaves {', '.join(off)} off"


@stack_rule(
    "s3-acls-disabled",
    "S3 buckets disable ACLs (object ownership BucketOwnerEnforced)",
    ["Checkov CKV2_AWS_65", "AWS FSBP S3.12"],
)
def acls_disabled(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        if "BucketOwnerEnforced" not in _setting_values(
            resources, bucket, "BucketOwnershipControls", "rule", "objectOwnership"
        ):
            yield bucket, "needs BucketOwnershipControls with objectOwnership BucketOwnerEnforced (ACLs disabled)"


def _encryption_rules(resources: Sequence[PolicyResource], bucket: PolicyResource) -> list:
    return [
        rule
        for rules in _setting_values(resources, bucket, "BucketServerSideEncryptionConfiguration", "rules")
        for rule in as_list(rules)
    ]


@stack_rule(
    "s3-default-encryption",
    "S3 buckets encrypt new objects by default",
    ["Checkov CKV_AWS_19", "AWS Config s3-bucket-server-side-encryption-enabled"],
)
def default_encryption(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        algorithms = [
            get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
            for rule in _encryption_rules(resources, bucket)
        ]
        if not any(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in algorithms):
            yield bucket, "has no default encryption (BucketServerSideEncryptionConfiguration)"


@stack_rule(
    "s3-kms-encryption",
    "S3 buckets encrypt with a customer KMS key and an S3 bucket key",
    ["Checkov CKV_AWS_145", "AWS FSBP S3.17"],
)
def kms_encryption(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        rules = _encryption_rules(resources, bucket)
        good = [
            rule
            for rule in rules
            if get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm") in ("aws:kms", "aws:kms:dsse")
            and get(rule, "applyServerSideEncryptionByDefault", "kmsMasterKeyId")
            and is_true(get(rule, "bucketKeyEnabled"))
        ]
        if not good:
            yield bucket, "default encryption must be aws:kms with a kmsMasterKeyId and bucketKeyEnabled"


@stack_rule("s3-versioning", "S3 buckets keep object versions", ["Checkov CKV_AWS_21", "AWS FSBP S3.14"])
def versioning(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        if "Enabled" not in _setting_values(resources, bucket, "BucketVersioning", "versioningConfiguration", "status"):
            yield bucket, "needs BucketVersioning with status Enabled"


def _bucket_policies(resources: Sequence[PolicyResource], bucket: PolicyResource) -> list:
    return [document(policy) for policy in _setting_values(resources, bucket, "BucketPolicy", "policy")]


def _denies_plain_http(statement) -> bool:
    actions = as_list(statement.get("Action"))
    condition = get(statement, "Condition", "Bool", "aws:SecureTransport")
    return (
        statement.get("Effect") == "Deny"
        and statement.get("Principal") in ("*", {"AWS": "*"})
        and any(a in ("s3:*", "*") for a in actions)
        and str(condition).lower() == "false"
        and len(as_list(statement.get("Resource"))) >= 2
    )


@stack_rule(
    "s3-tls-only",
    "S3 bucket policies deny every request not made over TLS (bucket and objects)",
    ["Checkov CKV_AWS_379", "AWS FSBP S3.5"],
)
def tls_only(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        docs = _bucket_policies(resources, bucket)
        if not any(_denies_plain_http(s) for doc in docs for s in statements(doc)):
            yield (
                bucket,
                (
                    "needs a BucketPolicy that denies s3:* on the bucket and its objects when "
                    "aws:SecureTransport is false"
                ),
            )


def _is_anyone(principal) -> bool:
    return principal == "*" or "*" in as_list(get(principal, "AWS"))


@stack_rule(
    "s3-no-public-policy",
    "S3 bucket policies grant nothing to any principal without conditions",
    ["Checkov CKV_AWS_70", "AWS FSBP S3.2, S3.3"],
)
def no_public_policy(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        for doc in _bucket_policies(resources, bucket):
            for s in statements(doc):
                if allows(s) and _is_anyone(s.get("Principal")) and not s.get("Condition"):
                    yield bucket, f"policy statement {s.get('Sid', '(no Sid)')} allows any principal"


@stack_rule(
    "s3-lifecycle",
    "S3 buckets have lifecycle rules, including aborting incomplete multipart uploads",
    ["Checkov CKV2_AWS_61, CKV_AWS_300", "AWS FSBP S3.13"],
)
def lifecycle(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        rules = [
            rule
            for rules in _setting_values(resources, bucket, "BucketLifecycleConfiguration", "rules")
            for rule in as_list(rules)
        ]
        if not rules:
            yield bucket, "has no BucketLifecycleConfiguration"
        elif not any(
            get(rule, "status") == "Enabled" and get(rule, "abortIncompleteMultipartUpload", "daysAfterInitiation")
            for rule in rules
        ):
            yield bucket, "lifecycle has no enabled rule aborting incomplete multipart uploads"


@stack_rule(
    "s3-access-logging", "S3 buckets log their accesses to another bucket", ["Checkov CKV_AWS_18", "AWS FSBP S3.9"]
)
def access_logging(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for bucket in of_type(resources, S3_BUCKET):
        if not any(_setting_values(resources, bucket, "BucketLogging", "targetBucket")):
            yield bucket, "needs BucketLogging with a targetBucket"
