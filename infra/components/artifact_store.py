"""ArtifactStore: the KMS key and the S3 buckets for training data, artifacts and their access logs.

Every bucket gets the same hardening as separate resources (pulumi-aws 7 splits a bucket's settings out of
`aws.s3.Bucket`): ACLs disabled, all four public-access-block flags, default encryption, versioning, a
TLS-only bucket policy and lifecycle rules. Data and artifacts are SSE-KMS with an S3 bucket key and log
their accesses to the access-logs bucket; that bucket is SSE-S3, because S3 server access logging cannot
deliver into an SSE-KMS bucket, and it does not log itself (infra/policy/waivers.toml).

Protection (deepcloud:protectDataBucket, on by default) covers the data bucket, every setting above of it, and
the KMS key: `pulumi destroy` refuses to run, and `pulumi destroy --exclude-protected` (what `make destroy`
runs) removes everything else but leaves the data private, encrypted and readable. Only its access logging goes,
with the access-log bucket. Non-empty buckets are deleted only with deepcloud:forceDestroy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components._base import Component
from infra.components._iam import AwsContext

ARTIFACT_PREFIXES = ("models/", "checkpoints/", "runs/")
"""Where the trainer writes in the artifacts bucket: exported models, checkpoints, run records."""
ABORT_MULTIPART_DAYS = 7
"""Incomplete multipart uploads (a killed upload of a checkpoint) are deleted after this many days."""
ASYNC_DAYS = 7
"""Requests, results and failures of an async endpoint (async/) expire after this many days: they are transient."""
LifecycleRule = aws.s3.BucketLifecycleConfigurationRuleArgsDict
"""One lifecycle rule of a bucket, in the provider's typed form."""
DefaultEncryption = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgsDict
"""A bucket's default encryption, in the provider's typed form."""


@dataclass
class ArtifactStoreArgs:
    aws: AwsContext
    """Account, partition and region, for the key policy."""

    protect_data: bool
    """Pulumi-protect the data bucket, its settings and the KMS key, so `pulumi destroy` stops before them."""

    force_destroy: bool
    """Let `pulumi destroy` delete non-empty buckets (the data bucket only once unprotected)."""

    checkpoint_noncurrent_days: int
    """Days before a non-current checkpoint version expires."""

    key_alias: str
    """KMS alias, without the alias/ prefix."""


class ArtifactStore(Component[ArtifactStoreArgs]):
    key_arn: pulumi.Output[str]
    data_bucket: pulumi.Output[str]
    data_bucket_arn: pulumi.Output[str]
    artifacts_bucket: pulumi.Output[str]
    artifacts_bucket_arn: pulumi.Output[str]
    logs_bucket: pulumi.Output[str]

    def __init__(self, name: str, args: ArtifactStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)

        key = self._create_key()
        # protect: the training data must survive a destroy unless config says otherwise (see module docstring).
        data = self._create_bucket(
            "data",
            key=key,
            force_destroy=args.force_destroy and not args.protect_data,
            lifecycle=[_noncurrent_rule("noncurrent", "", 30)],
            protect=args.protect_data,
        )
        artifacts = self._create_bucket(
            "artifacts",
            key=key,
            force_destroy=args.force_destroy,
            lifecycle=[
                _noncurrent_rule("noncurrent", "", 90),
                _noncurrent_rule("noncurrent-checkpoints", "checkpoints/", args.checkpoint_noncurrent_days),
                _expire_rule("expire-async", days=ASYNC_DAYS, prefix="async/"),
            ],
        )
        logs = self._create_bucket(
            "access-logs",
            key=None,
            force_destroy=args.force_destroy,
            lifecycle=[_expire_rule("expire-logs", days=365)],
            policy_statements=lambda arn: [_log_delivery(arn, [data, artifacts], args.aws)],
        )
        for role, source in (("data", data), ("artifacts", artifacts)):
            # not protected: a retained data bucket stops logging when the access-log bucket goes.
            aws.s3.BucketLogging(
                f"{name}-{role}-logging",
                bucket=source.id,
                target_bucket=logs.id,
                target_prefix=f"{role}/",
                opts=self._child(),
            )

        self.key_arn = key.arn
        self.data_bucket = data.bucket
        self.data_bucket_arn = data.arn
        self.artifacts_bucket = artifacts.bucket
        self.artifacts_bucket_arn = artifacts.arn
        self.logs_bucket = logs.bucket
        self.register_outputs(
            {
                "key_arn": self.key_arn,
                "data_bucket": self.data_bucket,
                "artifacts_bucket": self.artifacts_bucket,
                "logs_bucket": self.logs_bucket,
            }
        )

    def _retained(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options of what a protected data bucket needs to stay private and readable: with them protected,
        `pulumi destroy` refuses and `pulumi destroy --exclude-protected` keeps them (and what they use)."""
        return self._child(protect=self._args.protect_data, **kwargs)

    def _create_key(self) -> aws.kms.Key:
        ctx = self._args.aws
        root = pulumi.Output.concat("arn:", ctx.partition, ":iam::", ctx.account_id, ":root")
        logs_arn = ctx.arn("logs", "log-group:*")
        policy = pulumi.Output.json_dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AccountAdministersKey",
                        "Effect": "Allow",
                        "Principal": {"AWS": root},
                        "Action": "kms:*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "CloudWatchLogsEncrypt",
                        "Effect": "Allow",
                        "Principal": {"Service": f"logs.{ctx.region}.amazonaws.com"},
                        "Action": [
                            "kms:Encrypt*",
                            "kms:Decrypt*",
                            "kms:ReEncrypt*",
                            "kms:GenerateDataKey*",
                            "kms:Describe*",
                        ],
                        "Resource": "*",
                        "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": logs_arn}},
                    },
                ],
            }
        )
        # protect with the data bucket: its objects are encrypted with this key and unreadable without it.
        key = aws.kms.Key(
            f"{self._name}-key",
            description="deepcloud: S3 objects, ECR images, logs, endpoint volumes",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=policy,
            opts=self._retained(),
        )
        aws.kms.Alias(
            f"{self._name}-key-alias",
            name=f"alias/{self._args.key_alias}",
            target_key_id=key.key_id,
            opts=self._retained(),
        )
        return key

    def _create_bucket(
        self,
        role: str,
        *,
        key: aws.kms.Key | None,
        force_destroy: bool,
        lifecycle: list[LifecycleRule],
        policy_statements: Callable[[pulumi.Output[str]], list[dict[str, Any]]] = lambda arn: [],
        protect: bool = False,
    ) -> aws.s3.Bucket:
        """A bucket with ACLs disabled, public access blocked, default encryption (SSE-KMS with a bucket key
        when `key` is given, else SSE-S3), versioning, a TLS-only policy and `lifecycle` plus an
        abort-incomplete-multipart-upload rule. `protect` covers the bucket and all of these settings, so a
        bucket that outlives `pulumi destroy --exclude-protected` keeps its hardening."""
        name = f"{self._name}-{role}"

        def opts(**kwargs: Any) -> pulumi.ResourceOptions:
            return self._child(protect=protect, **kwargs)

        bucket = aws.s3.Bucket(name, force_destroy=force_destroy, opts=opts())
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=opts()
        )
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=opts(),
        )
        if key is None:
            default: DefaultEncryption = {"sse_algorithm": "AES256"}
        else:
            default = {"sse_algorithm": "aws:kms", "kms_master_key_id": key.arn}
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": default, "bucket_key_enabled": key is not None}],
            opts=opts(),
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=opts()
        )
        # depends_on versioning: S3 rejects rules on non-current versions until versioning is on.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[_abort_multipart_rule(), *lifecycle],
            opts=opts(depends_on=[versioning]),
        )
        # depends_on the public access block: S3 rejects a policy write that races the block's creation.
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=_bucket_policy(bucket.arn, policy_statements(bucket.arn)),
            opts=opts(depends_on=[block]),
        )
        return bucket


def _log_delivery(logs_arn: pulumi.Output[str], sources: Sequence[aws.s3.Bucket], ctx: AwsContext) -> dict[str, Any]:
    """Let S3's log delivery service write access logs of `sources` (and nothing else) into the bucket."""
    return {
        "Sid": "S3ServerAccessLogDelivery",
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": pulumi.Output.concat(logs_arn, "/*"),
        "Condition": {
            "ArnLike": {"aws:SourceArn": [source.arn for source in sources]},
            "StringEquals": {"aws:SourceAccount": ctx.account_id},
        },
    }


def _bucket_policy(bucket_arn: pulumi.Output[str], extra: list[dict[str, Any]]) -> pulumi.Output[str]:
    deny_plain_http = {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [deny_plain_http, *extra]})


def _abort_multipart_rule() -> LifecycleRule:
    return {
        "id": "abort-incomplete-multipart",
        "status": "Enabled",
        "filter": {"prefix": ""},
        "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_MULTIPART_DAYS},
    }


def _noncurrent_rule(rule_id: str, prefix: str, days: int) -> LifecycleRule:
    return {
        "id": rule_id,
        "status": "Enabled",
        "filter": {"prefix": prefix},
        "noncurrent_version_expiration": {"noncurrent_days": days},
    }


def _expire_rule(rule_id: str, days: int, prefix: str = "") -> LifecycleRule:
    return {
        "id": rule_id,
        "status": "Enabled",
        "filter": {"prefix": prefix},
        "expiration": {"days": days},
        "noncurrent_version_expiration": {"noncurrent_days": 7},
    }
