"""Images: immutable tags from the git revision and the build context's content; a rebuild of unchanged sources is
skipped. ECR is moto_server's; `docker` is the recording stand-in (its `push` puts the image in moto's ECR)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ops.aws import images
from ops.aws.clients import Aws
from ops.errors import OpsError
from tests.conftest import REPO

SPEC = images.ImageSpec("trainer", "trainer/Dockerfile", ("trainer", "requirements/constraints.txt"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the trainer image is built from, safe to change."""
    root = tmp_path / "repo"
    for path in ("trainer", "requirements/constraints.txt", ".dockerignore"):
        src = REPO / path
        if src.is_dir():
            shutil.copytree(src, root / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / path)
    return root


def test_content_digest_follows_the_build_context(tree: Path) -> None:
    first = images.content_digest(tree, SPEC, {})
    assert images.content_digest(tree, SPEC, {}) == first
    (tree / "trainer" / "__pycache__").mkdir()
    (tree / "trainer" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    (tree / "trainer" / "notes.swp").write_bytes(b"editor")
    assert images.content_digest(tree, SPEC, {}) == first, ".dockerignore'd files do not count"
    assert images.content_digest(tree, SPEC, {"TORCH_INDEX": "cu126"}) != first, "build arguments count"
    (tree / "trainer" / "Dockerfile").write_text((tree / "trainer" / "Dockerfile").read_text() + "\n# changed\n")
    changed = images.content_digest(tree, SPEC, {})
    assert changed != first, "the Dockerfile counts"
    (tree / "trainer" / "loop.py").write_text((tree / "trainer" / "loop.py").read_text() + "\n# changed\n")
    assert images.content_digest(tree, SPEC, {}) not in (first, changed)


def test_build_push_then_skip_when_unchanged(stack, tmp_path: Path) -> None:
    aws = Aws("us-east-1")
    image = images.ensure(aws, REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    digest12 = images.content_digest(REPO, images.IMAGES["trainer"], {})[:12]
    assert image.built
    assert image.tag == f"{images.git_short(REPO)}-{digest12}"
    docker = stack.standins.calls("docker")
    registry = stack.trainer_repository_url.split("/")[0]
    assert [c[0] for c in docker] == ["info", "login", "build", "push"]
    assert docker[1] == ["login", "--username", "AWS", "--password-stdin", registry]
    assert docker[2][:7] == ["build", "--platform", "linux/amd64", "-f", "trainer/Dockerfile", "-t", image.uri]
    assert f"REVISION={images.git_short(REPO)}" in docker[2]
    assert docker[2][-1] == "."
    assert docker[3] == ["push", image.uri]
    assert image.digest.startswith("sha256:")

    again = images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    assert not again.built
    assert again.tag == image.tag
    assert again.digest == image.digest
    assert len(stack.standins.calls("docker")) == 4, "nothing built or pushed the second time"


def test_serving_build_argument_reaches_docker(stack) -> None:
    image = images.ensure(Aws("us-east-1"), REPO, images.IMAGES["serving"], stack.serving_repository_url,
                          {"TORCH_INDEX": "cu126"})
    build = next(c for c in stack.standins.calls("docker") if c[0] == "build")
    assert build[build.index("-f") + 1] == "serving/Dockerfile"
    assert "TORCH_INDEX=cu126" in build
    assert image.built


def test_failed_build_is_one_line(stack) -> None:
    stack.standins.update(fail={"docker_build": "ERROR: failed to solve: process \"/bin/sh -c pip install\" did not "
                                                "complete successfully: exit code: 1"})
    with pytest.raises(OpsError, match=r"^docker build of the trainer image failed: ERROR: failed to solve"):
        images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    assert not [c for c in stack.standins.calls("docker") if c[0] == "push"]


def test_missing_docker_is_one_line(stack) -> None:
    stack.standins.remove("docker")
    with pytest.raises(OpsError, match=r"^the docker CLI is not installed \(no `docker` on PATH\)"):
        images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
