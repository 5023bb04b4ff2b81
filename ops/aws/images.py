"""The trainer and serving images: built with `docker build`, pushed to the stack's ECR repositories under an
immutable tag, and not built again when their sources have not changed.

The tag is ``<git revision, 12 hex>-<content digest, 12 hex>``. The content digest covers what the image is
built from: the room's folder, requirements/constraints.txt, the Dockerfile, .dockerignore and the build
arguments, with the files .dockerignore keeps out of the context left out here too. When the repository
already holds a tag with the same digest, that image is used and nothing is built or pushed: a new commit
that leaves an image's sources alone reuses its image.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ops.aws import proc
from ops.aws.clients import Aws
from ops.aws.console import say
from ops.errors import OpsError

DOCKER_INSTALL = "install Docker Engine (https://docs.docker.com/engine/install/) and start it"
PLATFORM = "linux/amd64"
"""SageMaker and the ECS GPU AMI run x86_64."""
_SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".venv", ".deepcloud"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".pyd", ".swp", ".Dockerfile")
_SKIP_NAMES = frozenset({"Dockerfile", ".DS_Store", ".env"})


@dataclass(frozen=True, slots=True)
class ImageSpec:
    name: str
    dockerfile: str
    sources: tuple[str, ...]
    """Paths in the build context the Dockerfile reads (folders or files, relative to the repository)."""


IMAGES = {
    "trainer": ImageSpec("trainer", "trainer/Dockerfile", ("trainer", "requirements/constraints.txt")),
    "serving": ImageSpec("serving", "serving/Dockerfile", ("serving", "requirements/constraints.txt")),
}


@dataclass(frozen=True, slots=True)
class Image:
    repository_url: str
    tag: str
    digest: str
    built: bool

    @property
    def uri(self) -> str:
        return f"{self.repository_url}:{self.tag}"


def content_digest(repo: Path, spec: ImageSpec, build_args: dict[str, str]) -> str:
    """sha256 over the relative path and bytes of every file the build context gives the image."""
    h = hashlib.sha256()
    files: list[Path] = [repo / spec.dockerfile, repo / ".dockerignore"]
    for source in spec.sources:
        path = repo / source
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and _in_context(p.relative_to(path)))
        elif path.is_file():
            files.append(path)
        else:
            raise OpsError(f"{path} is missing: the {spec.name} image is built from it")
    for path in files:
        if path.exists():
            h.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for key in sorted(build_args):
        h.update(f"--build-arg {key}={build_args[key]}\0".encode())
    return h.hexdigest()


def _in_context(rel: Path) -> bool:
    parts = rel.parts
    if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
        return False
    return parts[-1] not in _SKIP_NAMES and not parts[-1].endswith(_SKIP_SUFFIXES)


def git_short(repo: Path) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "nogit"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "nogit"


def repository_name(url: str) -> str:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<name>` -> `<name>`."""
    if "/" not in url:
        raise OpsError(f"{url!r} is not an ECR repository URL (<registry>/<name>): check the stack outputs")
    return url.split("/", 1)[1]


def find_tag(aws: Aws, repository_url: str, digest12: str) -> tuple[str, str] | None:
    """(tag, image digest) of an image in the repository built from the same content, if there is one."""
    ecr = aws.client("ecr")
    pages = ecr.get_paginator("describe_images").paginate(repositoryName=repository_name(repository_url),
                                                          filter={"tagStatus": "TAGGED"})
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
        done = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], cwd=repo, capture_output=True,
                              text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise OpsError("the Docker engine did not answer `docker info` within 60 s: restart Docker") from None
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        said = next((line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()),
                    f"exit code {done.returncode}")
        raise OpsError(f"no Docker engine answers (docker info: {said}): start Docker, or give this user access "
                       "to it, and run again")
    return version


def ensure(aws: Aws, repo: Path, spec: ImageSpec, repository_url: str,
           build_args: dict[str, str] | None = None) -> Image:
    """The image for the current sources in ``repository_url``: found by its content digest, else built and
    pushed."""
    args = dict(build_args or {})
    digest12 = content_digest(repo, spec, args)[:12]
    found = find_tag(aws, repository_url, digest12)
    if found:
        tag, image_digest = found
        say(f"{spec.name} image {repository_url}:{tag} is up to date (content {digest12}): not rebuilt")
        return Image(repository_url, tag, image_digest, built=False)
    revision = git_short(repo)
    tag = f"{revision}-{digest12}"
    uri = f"{repository_url}:{tag}"
    version = check_docker(repo)
    say(f"building {spec.name} image {uri} (Docker {version}, {PLATFORM})")
    docker = proc.require("docker", DOCKER_INSTALL)
    _login(aws, repo, docker, repository_url)
    build = [docker, "build", "--platform", PLATFORM, "-f", spec.dockerfile, "-t", uri,
             "--build-arg", f"VERSION={tag}", "--build-arg", f"REVISION={revision}"]
    for key in sorted(args):
        build += ["--build-arg", f"{key}={args[key]}"]
    _run([*build, "."], repo, f"docker build of the {spec.name} image failed")
    _run([docker, "push", uri], repo, f"docker push of {uri} failed")
    pushed = aws.client("ecr").batch_get_image(repositoryName=repository_name(repository_url),
                                               imageIds=[{"imageTag": tag}]).get("images", [])
    if not pushed:
        raise OpsError(f"docker push reported success but ECR has no {uri}: push it again")
    say(f"pushed {uri}")
    return Image(repository_url, tag, pushed[0]["imageId"]["imageDigest"], built=True)


def _login(aws: Aws, repo: Path, docker: str, repository_url: str) -> None:
    data = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = repository_url.split("/", 1)[0]
    code, lines = proc.stream([docker, "login", "--username", user, "--password-stdin", registry], repo,
                              lambda line: None, stdin=password)
    if code != 0:
        said = next((line for line in reversed(lines) if line.strip()), f"exit code {code}")
        raise OpsError(f"docker login to {registry} failed: {said.strip()}")


def _run(argv: list[str], repo: Path, what: str) -> None:
    code, lines = proc.stream(argv, repo, lambda line: say(f"  {line}"))
    if code != 0:
        said = next((line.strip() for line in reversed(lines) if "error" in line.lower()),
                    lines[-1].strip() if lines else f"exit code {code}")
        raise OpsError(f"{what}: {said}")
