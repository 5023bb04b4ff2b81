"""Images: immutable tags from the git revision and the build context's content; a rebuild of unchanged sources is
skipped; the build is the hermetic one `make images` runs here, with only the base and torch's source different.
ECR is moto_server's; `docker` is the recording stand-in (its `push` puts the image in moto's ECR), and so is the
`pip download` that fills the wheelhouse (CUDA torch is GBs from download.pytorch.org, unreachable here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ops.aws import images
from ops.aws.clients import Aws
from ops.container import base as container_base
from ops.container import build as container_build
from ops.container import images as container_images
from ops.container.engine import Engine
from ops.errors import OpsError
from ops.revision import revision as git_revision
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
    assert image.tag == f"{git_revision(REPO, short=True)}-{digest12}"
    docker = stack.standins.calls("docker")
    registry = stack.trainer_repository_url.split("/")[0]
    assert [c[0] for c in docker] == ["info", "login", "build", "push"]
    assert docker[1] == ["login", "--username", "AWS", "--password-stdin", registry]
    assert docker[2][:8] == [
        "build",
        "--network=none",
        "--platform",
        "linux/amd64",
        "-f",
        "trainer/Dockerfile",
        "-t",
        image.uri,
    ]
    assert f"REVISION={git_revision(REPO, short=True)}" in docker[2]
    assert not [a for a in docker[2] if a.startswith(("BASE_IMAGE=", "TORCH_INDEX="))], (
        "an AWS image is built on the Dockerfile's pinned base with its default torch (cu126 for the trainer)"
    )
    assert docker[2][-1] == "."
    torch_only, rest = stack.standins.calls("pip")
    assert torch_only[torch_only.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu126"
    assert torch_only[-1] == "torch==2.13.0"
    assert "--no-deps" in torch_only
    assert "--index-url" not in rest, "everything but torch comes from PyPI"
    assert rest[rest.index("--requirement") + 1] == "trainer/requirements.txt"
    assert rest[rest.index("--constraint") + 1] == "requirements/constraints.txt"
    for call in (torch_only, rest):
        assert "--only-binary=:all:" in call
        assert call[call.index("--python-version") + 1] == "3.11"
        assert "manylinux_2_28_x86_64" in call
        assert "manylinux2014_x86_64" in call
    assert docker[3] == ["push", image.uri]
    assert image.digest.startswith("sha256:")

    again = images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    assert not again.built
    assert again.tag == image.tag
    assert again.digest == image.digest
    assert len(stack.standins.calls("docker")) == 4, "nothing built or pushed the second time"
    assert len(stack.standins.calls("pip")) == 2, "no wheelhouse filled the second time"


def test_serving_build_argument_reaches_docker(stack) -> None:
    image = images.ensure(
        Aws("us-east-1"), REPO, images.IMAGES["serving"], stack.serving_repository_url, {"TORCH_INDEX": "cu126"}
    )
    build = next(c for c in stack.standins.calls("docker") if c[0] == "build")
    assert build[build.index("-f") + 1] == "serving/Dockerfile"
    assert "TORCH_INDEX=cu126" in build
    assert image.built
    torch_only = stack.standins.calls("pip")[0]
    assert torch_only[torch_only.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu126", (
        "the wheelhouse holds the torch build TORCH_INDEX names"
    )


def test_local_build_is_the_aws_build_with_another_base_and_torch(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make images` (what the container tests run) and the AWS push run one build: the same pip downloads and the
    same `docker build`, but for the base image and where torch comes from."""
    aws_image = images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    aws_pip = stack.standins.calls("pip")
    aws_build = next(c for c in stack.standins.calls("docker") if c[0] == "build")
    base = "deepcloud-base:bookworm-0123456789ab-20260101"
    monkeypatch.setattr(container_base, "ensure_base", lambda engine, say: base)
    monkeypatch.setattr(container_build, "WHEELHOUSE", str(stack.standins.folder / "local-wheelhouse"))
    engine = Engine(str(stack.standins.bin / "docker"), "unix:///nonexistent", "20.10.24", own=True)
    local_image = container_images.ensure(engine, REPO, images.IMAGES["trainer"], say=lambda line: None)
    local_pip = stack.standins.calls("pip")[len(aws_pip) :]
    local_build = [c for c in stack.standins.calls("docker") if c[0] == "build"][-1]
    assert local_image.built

    def without(argv: list[str], *values: str) -> list[str]:
        """argv without the given values and the flag before each."""
        out = list(argv)
        for value in values:
            i = out.index(value)
            del out[i - 1 : i + 1]
        return out

    digest12 = local_image.ref.rsplit(":", 1)[1]
    local_version = f"VERSION={git_revision(REPO, short=True)}-{digest12}"
    assert without(
        local_build, local_image.ref, "deepcloud-trainer:local", local_version, f"BASE_IMAGE={base}", "TORCH_INDEX=cpu"
    ) == without(aws_build, aws_image.uri, f"VERSION={aws_image.tag}")
    assert without(local_pip[0], *(p for p in local_pip[0] if "local-wheelhouse" in p)) == without(
        aws_pip[0], "https://download.pytorch.org/whl/cu126", *(p for p in aws_pip[0] if "wheelhouse" in p)
    ), "torch alone: from PyPI's CUDA 12.6 index for AWS, from this host's pip configuration here"
    assert [a for a in local_pip[1] if "wheelhouse" not in a] == [a for a in aws_pip[1] if "wheelhouse" not in a]


def test_failed_build_is_one_line(stack) -> None:
    stack.standins.update(
        fail={
            "docker_build": 'ERROR: failed to solve: process "/bin/sh -c pip install" did not '
            "complete successfully: exit code: 1"
        }
    )
    with pytest.raises(OpsError, match=r"^docker build of the trainer image failed: ERROR: failed to solve"):
        images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
    assert not [c for c in stack.standins.calls("docker") if c[0] == "push"]


def test_missing_docker_is_one_line(stack) -> None:
    stack.standins.remove("docker")
    with pytest.raises(OpsError, match=r"^the docker CLI is not installed \(no `docker` on PATH\)"):
        images.ensure(Aws("us-east-1"), REPO, images.IMAGES["trainer"], stack.trainer_repository_url)
