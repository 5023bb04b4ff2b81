"""The trainer and serving images: built with `docker build`, pushed to the stack's ECR repositories under an
immutable tag, and not built again when their sources have not changed.

The build is ops/container/build.py's, the one `make images` runs here and the container tests test: a
wheelhouse filled by `pip download` on this machine, then `docker build --network=none`. For AWS the base is the
Dockerfiles' pinned python image and torch comes from https://download.pytorch.org/whl/<TORCH_INDEX> (the
trainer's default cu126, the server's cpu unless deploy asks for cu126).

The tag is ``<git revision, 12 hex>-<content digest, 12 hex>``. The content digest covers what the image is
built from: the room's folder, requirements/constraints.txt, the Dockerfile, .dockerignore and the build
arguments, with the files .dockerignore keeps out of the context left out here too. When the repository
already holds a tag with the same digest, that image is used and nothing is built or pushed: a new commit
that leaves an image's sources alone reuses its image.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ops import proc
from ops.aws.clients import Aws
from ops.aws.console import say
from ops.container import build as container_build
from ops.container.build import IMAGES, PLATFORM, ImageSpec, content_digest
from ops.errors import OpsError
from ops.revision import revision as git_revision

__all__ = ["IMAGES", "PLATFORM", "Image", "ImageSpec", "check_docker", "content_digest", "ensure"]

DOCKER_INSTALL = "install Docker Engine (https://docs.docker.com/engine/install/) and start it"


@dataclass(frozen=True, slots=True)
class Image:
    repository_url: str
    tag: str
    digest: str
    built: bool

    @property
    def uri(self) -> str:
        return f"{self.repository_url}:{self.tag}"


def repository_name(url: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<name>` -> `<name>`."""
    if "/" not in url:
        raise OpsError(f"{url!r} is not an ECR repository URL (<registry>/<name>): check the stack outputs")
    return url.split("/", 1)[1]


def find_tag(aws: Aws, repository_url: str, digest12: str) -> tuple[str, str] | None:
    """(tag, image digest) of an image in the repository built from the same content, if there is one."""
    ecr = aws.client("ecr")
    pages = ecr.get_paginator("describe_images").paginate(
        repositoryName=repository_name(repository_url), filter={"tagStatus": "TAGGED"}
    )
    for page in pages:
        for detail in page.get("imageDetails", []):
            for tag in detail.get("imageTags", []):
                if tag.endswith(f"-{digest12}"):
                    return tag, detail["imageDigest"]
    return None


def check_docker(repo: Path) -> str:
    """The Docker engine's version, or an OpsError when the CLI is missing or no engine answers."""
    exe = proc.require("docker", DOCKER_INSTALL)
    try:
        done = subprocess.run(
            [exe, "info", "--format", "{{.ServerVersion}}"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OpsError("the Docker engine did not answer `docker info` within 60 s: restart Docker") from None
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        said = next(
            (line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()),
            f"exit code {done.returncode}",
        )
        raise OpsError(
            f"no Docker engine answers (docker info: {said}): start Docker, or give this user access "
            "to it, and run again"
        )
    return version


def ensure(
    aws: Aws, repo: Path, spec: ImageSpec, repository_url: str, build_args: dict[str, str] | None = None
) -> Image:
    """The image for the current sources in ``repository_url``: found by its content digest, else built and
    pushed."""
    args = dict(build_args or {})
    digest12 = content_digest(repo, spec, args)[:12]
    found = find_tag(aws, repository_url, digest12)
    if found:
        tag, image_digest = found
        say(f"{spec.name} image {repository_url}:{tag} is up to date (content {digest12}): not rebuilt")
        return Image(repository_url, tag, image_digest, built=False)
    revision = git_revision(repo, short=True)
    tag = f"{revision}-{digest12}"
    uri = f"{repository_url}:{tag}"
    version = check_docker(repo)
    say(f"building {spec.name} image {uri} (Docker {version}, {PLATFORM})")
    docker = proc.require("docker", DOCKER_INSTALL)
    _login(aws, repo, docker, repository_url)
    torch = container_build.TorchSource.pytorch(
        args.get("TORCH_INDEX") or container_build.dockerfile_default(repo, spec, "TORCH_INDEX")
    )
    container_build.build(docker, {}, repo, spec, [uri], tag, revision, args, torch, lambda line: say(f"  {line}"))
    _run([docker, "push", uri], repo, f"docker push of {uri} failed")
    pushed = (
        aws.client("ecr")
        .batch_get_image(repositoryName=repository_name(repository_url), imageIds=[{"imageTag": tag}])
        .get("images", [])
    )
    if not pushed:
        raise OpsError(f"docker push reported success but ECR has no {uri}: push it again")
    say(f"pushed {uri}")
    return Image(repository_url, tag, pushed[0]["imageId"]["imageDigest"], built=True)


def _login(aws: Aws, repo: Path, docker: str, repository_url: str) -> None:
    data = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = repository_url.split("/", 1)[0]
    code, lines = proc.stream(
        [docker, "login", "--username", user, "--password-stdin", registry], repo, lambda line: None, stdin=password
    )
    if code != 0:
        said = next((line for line in reversed(lines) if line.strip()), f"exit code {code}")
        raise OpsError(f"docker login to {registry} failed: {said.strip()}")


def _run(argv: list[str], repo: Path, what: str) -> None:
    container_build.run_streamed(argv, repo, what, lambda line: say(f"  {line}"))
