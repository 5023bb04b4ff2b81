"""ImageRepos: the ECR repositories for the trainer and serving images.

Scan on push, immutable tags (a tag names one build for good, so a task definition or a SageMaker model
never changes under a running job), KMS encryption with the stack's key, and a lifecycle policy that drops
untagged layers and old builds. `force_delete` follows config, so `pulumi destroy` can remove a repository
that still holds images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components._base import Component

IMAGES = ("trainer", "serving")


@dataclass
class ImageReposArgs:
    kms_key_arn: pulumi.Input[str]
    """Key that encrypts the image layers."""

    force_delete: bool
    """Let `pulumi destroy` delete a repository that still holds images."""

    keep_images: int = 30
    """Tagged images kept per repository; older ones expire."""

    untagged_days: int = 7
    """Days an untagged image (a superseded manifest or a failed push) is kept."""


class ImageRepos(Component[ImageReposArgs]):
    repository_urls: dict[str, pulumi.Output[str]]
    repository_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ImageReposArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, args, opts)
        repositories = {image: self._create_repository(image) for image in IMAGES}
        self.repository_urls = {image: repo.repository_url for image, repo in repositories.items()}
        self.repository_arns = {image: repo.arn for image, repo in repositories.items()}
        self.register_outputs({f"{image}_repository_url": url for image, url in self.repository_urls.items()})

    def _create_repository(self, image: str) -> aws.ecr.Repository:
        repo = aws.ecr.Repository(
            f"{self._name}-{image}",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            encryption_configurations=[{"encryption_type": "KMS", "kms_key": self._args.kms_key_arn}],
            force_delete=self._args.force_delete,
            opts=self._child(),
        )
        aws.ecr.LifecyclePolicy(
            f"{self._name}-{image}-lifecycle",
            repository=repo.name,
            policy=lifecycle_policy(self._args.keep_images, self._args.untagged_days),
            opts=self._child(),
        )
        return repo


def lifecycle_policy(keep_images: int, untagged_days: int) -> str:
    """Expire untagged images after `untagged_days`, and all but the newest `keep_images` images."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"untagged images after {untagged_days} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": untagged_days,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the newest {keep_images} images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
                    "action": {"type": "expire"},
                },
            ]
        }
    )
