"""TrainingTask: the ECS task definition that runs the trainer image on the GPU capacity.

The container follows SageMaker's training contract as the image expects it: `train` as the command, the job
layout under /opt/ml, SIGTERM then SIGKILL after 120 s. It reserves GPUs, runs in awsvpc mode (its own ENI
and the workload security group), is not privileged, and has a read-only root filesystem: /opt/ml and /tmp
are task-scoped Docker volumes, the only places it writes. The image starts as root only to hand /opt/ml to
uid 10001 and drop to it (trainer/privileges.py), so the container keeps just the three capabilities that
needs.

Two roles, never the same one: the execution role is what ECS uses to start the task (pull the image, write
logs); the task role is what the training code gets (read the data bucket, write the artifacts bucket's
models/, checkpoints/ and runs/ prefixes, use the key for those objects). A third role lets the same image run
as a SageMaker training job (ops' BACKEND=sagemaker): the task role's data access, plus what SageMaker itself
does for the job (pull the image, write /aws/sagemaker/TrainingJobs, encrypt its volume, join our subnets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components._base import Component
from infra.components._iam import (
    AwsContext,
    assume_role_policy,
    document,
    ecr_pull_statements,
    kms_via_s3_statement,
    kms_volume_statement,
    sagemaker_observability_statements,
    statement,
    vpc_interface_statements,
)
from infra.components.artifact_store import ARTIFACT_PREFIXES
from infra.components.gpu_capacity import STOP_TIMEOUT_SECONDS

CONTAINER = "trainer"
JOB_DIR = "/opt/ml"


@dataclass
class TrainingTaskArgs:
    aws: AwsContext
    """Account, partition and region."""

    family: str
    """Task definition family: ops registers new revisions of it for new image tags."""

    image: pulumi.Input[str]
    """Trainer image reference (repository URL and tag)."""

    repository_arn: pulumi.Input[str]
    """The trainer repository, the only one the execution role may pull from."""

    data_bucket_arn: pulumi.Input[str]
    artifacts_bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    """The stack's KMS key: encrypts the buckets' objects and the log group."""

    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]
    """Where SageMaker training jobs put their network interfaces."""

    gpus: int
    cpu: int
    memory_mib: int
    shm_mib: int
    log_group_name: str
    """Name of the trainer's log group (what `make train` prints as `logs`)."""

    log_retention_days: int


class TrainingTask(Component[TrainingTaskArgs]):
    family: pulumi.Output[str]
    task_definition_arn: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    sagemaker_role_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: TrainingTaskArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        logs = self._create_log_group("logs", args.log_group_name, args.log_retention_days, args.key_arn)
        execution_role = self._create_execution_role(logs)
        task_role = self._create_task_role()
        task = self._create_task_definition(logs, execution_role, task_role)
        sagemaker_role = self._create_sagemaker_role()
        self.family = task.family
        self.task_definition_arn = task.arn
        self.task_role_arn = task_role.arn
        self.execution_role_arn = execution_role.arn
        self.sagemaker_role_arn = sagemaker_role.arn
        self.log_group_name = logs.name
        self.register_outputs(
            {
                "family": self.family,
                "task_definition_arn": self.task_definition_arn,
                "log_group_name": self.log_group_name,
            }
        )

    def _create_role(
        self, suffix: str, description: str, policy: pulumi.Output[str], trust: pulumi.Output[str] | None = None
    ) -> aws.iam.Role:
        """A role with one inline policy; trusted by ECS tasks of this account unless `trust` says otherwise."""
        trust = trust or assume_role_policy("ecs-tasks.amazonaws.com", self._args.aws.account_id)
        role = aws.iam.Role(
            f"{self._name}-{suffix}", description=description, assume_role_policy=trust, opts=self._child()
        )
        aws.iam.RolePolicy(f"{self._name}-{suffix}", role=role.id, policy=policy, opts=self._child())
        return role

    def _create_execution_role(self, logs: aws.cloudwatch.LogGroup) -> aws.iam.Role:
        policy = document(
            *ecr_pull_statements(self._args.repository_arn),
            statement(
                "WriteLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [pulumi.Output.concat(logs.arn, ":*")]
            ),
        )
        return self._create_role("execution", "deepcloud trainer task execution: pull the image, write logs", policy)

    def _training_data_statements(self) -> list[dict[str, Any]]:
        """Read the data bucket; read and write the artifacts bucket's training prefixes; the key, through S3."""
        args = self._args
        artifacts = pulumi.Output.from_input(args.artifacts_bucket_arn)
        return [
            statement("ListData", ["s3:ListBucket"], [args.data_bucket_arn]),
            statement("ReadData", ["s3:GetObject"], [pulumi.Output.concat(args.data_bucket_arn, "/*")]),
            statement(
                "ListArtifacts",
                ["s3:ListBucket"],
                [artifacts],
                {"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in ARTIFACT_PREFIXES]}},
            ),
            statement(
                "ReadWriteArtifacts",
                ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                [pulumi.Output.concat(artifacts, "/", prefix, "*") for prefix in ARTIFACT_PREFIXES],
            ),
            kms_via_s3_statement(args.key_arn, args.aws.region, ["kms:Decrypt", "kms:GenerateDataKey"]),
        ]

    def _create_task_role(self) -> aws.iam.Role:
        return self._create_role(
            "task",
            "deepcloud trainer code: read data, write artifacts",
            document(*self._training_data_statements()),
        )

    def _create_sagemaker_role(self) -> aws.iam.Role:
        args = self._args
        policy = document(
            *self._training_data_statements(),
            kms_volume_statement(args.key_arn),
            *ecr_pull_statements(args.repository_arn),
            *sagemaker_observability_statements(args.aws, "/aws/sagemaker/TrainingJobs"),
            *vpc_interface_statements(args.aws, args.subnet_ids, args.security_group_id),
        )
        return self._create_role(
            "sagemaker",
            "deepcloud trainer as a SageMaker training job",
            policy,
            trust=assume_role_policy("sagemaker.amazonaws.com"),
        )

    def _create_task_definition(
        self, logs: aws.cloudwatch.LogGroup, execution_role: aws.iam.Role, task_role: aws.iam.Role
    ) -> aws.ecs.TaskDefinition:
        args = self._args
        container = {
            "name": CONTAINER,
            "image": args.image,
            "essential": True,
            "command": ["train"],
            "cpu": args.cpu,
            "memory": args.memory_mib,
            "resourceRequirements": [{"type": "GPU", "value": str(args.gpus)}],
            "stopTimeout": STOP_TIMEOUT_SECONDS,
            "privileged": False,
            "readonlyRootFilesystem": True,
            "environment": [
                {"name": "SAGEMAKER_BASE_DIR", "value": JOB_DIR},
                {"name": "AWS_DEFAULT_REGION", "value": args.aws.region},
            ],
            "mountPoints": [
                {"sourceVolume": "job", "containerPath": JOB_DIR, "readOnly": False},
                {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False},  # noqa: S108
            ],
            "linuxParameters": {
                "sharedMemorySize": args.shm_mib,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "SETUID", "SETGID"]},
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": logs.name,
                    "awslogs-region": args.aws.region,
                    "awslogs-stream-prefix": CONTAINER,
                },
            },
        }
        task_scoped: aws.ecs.TaskDefinitionVolumeDockerVolumeConfigurationArgsDict = {
            "scope": "task",
            "driver": "local",
        }
        volumes: list[aws.ecs.TaskDefinitionVolumeArgsDict] = [
            {"name": "job", "docker_volume_configuration": task_scoped},
            {"name": "tmp", "docker_volume_configuration": task_scoped},
        ]
        return aws.ecs.TaskDefinition(
            f"{self._name}-trainer",
            family=args.family,
            network_mode="awsvpc",
            requires_compatibilities=["EC2"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            container_definitions=pulumi.Output.json_dumps([container]),
            volumes=volumes,
            opts=self._child(),
        )
