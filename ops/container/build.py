"""How both images are built, here (`make images`, TARGET=container) and for AWS (`make train|deploy TARGET=aws`):
one code path, so that what the container tests run is what ships. Only two things differ, and both are inputs:

    the base    BASE_IMAGE: the Dockerfiles' pinned python image for AWS; here a local Debian base
                (base.py), since a registry cannot be reached
    torch       TORCH_INDEX, the PyTorch wheel index of the build: for AWS `pip download` takes torch from
                https://download.pytorch.org/whl/<TORCH_INDEX> (the trainer's default cu126); here from this
                host's pip configuration (its CPU wheel on local disk), with TORCH_INDEX=cpu

The steps are the same either way:

1. **Wheelhouse.** `pip download` on the host fills ``.wheelhouse/<image>/`` with Linux x86_64 CPython 3.11 wheels
   (``--platform``/``--python-version``/``--only-binary=:all:``, so the host's own OS does not matter): first torch
   alone from its source, then the room's requirements under requirements/constraints.txt, resolved against that
   torch. A stamp of the inputs skips the download when nothing changed. (pip evaluates environment markers with
   the host's values: from a macOS host torch's Linux-only nvidia-* dependencies are left out, and the build then
   fails at its install step naming the missing wheel.)
2. **Build.** ``docker build --network=none --platform linux/amd64 -f <room>/Dockerfile ... .`` with BuildKit: the
   Dockerfile bind-mounts the wheelhouse into its one ``pip install --no-index``, so no step of the build reaches a
   network (the base image itself is resolved before any step runs).

Image tags carry the content digest (`content_digest`): the room's folder, requirements/constraints.txt, the
Dockerfile, .dockerignore and the build arguments (BASE_IMAGE and TORCH_INDEX among them), with the files
.dockerignore keeps out of the context left out here too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops import proc
from ops.errors import OpsError

PLATFORM = "linux/amd64"
"""SageMaker and the ECS GPU AMI run x86_64."""
PYTHON_VERSION = "3.11"
WHEEL_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
"""Every manylinux tag that glibc 2.36 runs: Debian bookworm's, the base of both images either way."""
PIP: tuple[str, ...] = (sys.executable, "-m", "pip")
PYTORCH_INDEX_URL = "https://download.pytorch.org/whl/{index}"
WHEELHOUSE = ".wheelhouse"
_SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".venv", ".deepcloud"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".pyd", ".swp", ".Dockerfile")
_SKIP_NAMES = frozenset({"Dockerfile", ".DS_Store", ".env"})


@dataclass(frozen=True, slots=True)
class ImageSpec:
    name: str
    dockerfile: str
    sources: tuple[str, ...]
    """Paths in the build context the Dockerfile reads (folders or files, relative to the repository)."""

    @property
    def requirements(self) -> str:
        return f"{self.name}/requirements.txt"


IMAGES = {
    "trainer": ImageSpec("trainer", "trainer/Dockerfile", ("trainer", "requirements/constraints.txt")),
    "serving": ImageSpec("serving", "serving/Dockerfile", ("serving", "requirements/constraints.txt")),
}
CONSTRAINTS = "requirements/constraints.txt"


@dataclass(frozen=True, slots=True)
class TorchSource:
    index: str
    """The TORCH_INDEX build argument: cpu, cu126, ..., the build the Dockerfile checks it installed."""

    url: str | None
    """Where `pip download` takes torch from; None: this host's pip configuration (its find-links and indexes)."""

    @classmethod
    def pytorch(cls, index: str) -> TorchSource:
        """PyTorch's own wheel index for ``index``: what AWS images are built from."""
        return cls(index, PYTORCH_INDEX_URL.format(index=index))

    def describe(self) -> str:
        return f"torch from {self.url}" if self.url else "torch from this host's pip configuration"


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


def dockerfile_default(repo: Path, spec: ImageSpec, name: str) -> str:
    """The default of a global ``ARG name=value`` in the image's Dockerfile (the one source of that value)."""
    found = re.search(rf"^ARG {re.escape(name)}=(\S+)\s*$", (repo / spec.dockerfile).read_text(), flags=re.M)
    if found is None:
        raise OpsError(f"{spec.dockerfile} has no `ARG {name}=<default>`")
    return found.group(1)


def wheelhouse_dir(repo: Path, spec: ImageSpec) -> Path:
    return repo / WHEELHOUSE / spec.name


def _torch_requirement(repo: Path, spec: ImageSpec) -> str:
    for line in (repo / spec.requirements).read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement.startswith("torch=="):
            return requirement
    raise OpsError(f"{spec.requirements} pins no torch==<version>")


def _pip_download_common(dest: Path) -> list[str]:
    platforms = [arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)]
    return [
        *PIP,
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        *platforms,
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        f"cp{PYTHON_VERSION.replace('.', '')}",
    ]


def _stamp(repo: Path, spec: ImageSpec, torch: TorchSource) -> str:
    h = hashlib.sha256()
    for name in (spec.requirements, CONSTRAINTS):
        h.update(name.encode() + b"\0" + (repo / name).read_bytes() + b"\0")
    h.update(repr((torch.index, torch.url, WHEEL_PLATFORMS, PYTHON_VERSION)).encode())
    return h.hexdigest()


def fill_wheelhouse(repo: Path, spec: ImageSpec, torch: TorchSource, say: Callable[[str], None] = print) -> Path:
    """``.wheelhouse/<image>/`` with every wheel the image installs; downloaded again only when an input changed."""
    folder = wheelhouse_dir(repo, spec)
    stamp = _stamp(repo, spec, torch)
    try:
        if (folder / ".stamp").read_text() == stamp:
            return folder
    except OSError:
        pass
    tmp = folder.with_name(f".{spec.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch_only = [
            *_pip_download_common(tmp),
            "--no-deps",
            *(["--index-url", torch.url] if torch.url else []),
            _torch_requirement(repo, spec),
        ]
        _pip(torch_only, repo, f"pip download of torch for the {spec.name} image ({torch.describe()}) failed")
        rest = [
            *_pip_download_common(tmp),
            "--find-links",
            str(tmp),
            "--requirement",
            spec.requirements,
            "--constraint",
            CONSTRAINTS,
        ]
        _pip(rest, repo, f"pip download of the {spec.name} image's requirements failed")
        (tmp / ".stamp").write_text(stamp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wheels = sorted(folder.glob("*.whl"))
    size = sum(p.stat().st_size for p in wheels) / 1e6
    shown = folder.relative_to(repo) if folder.is_relative_to(repo) else folder
    say(f"wheelhouse {shown}: {len(wheels)} wheels, {size:.0f} MB ({torch.describe()})")
    return folder


def _pip(argv: list[str], repo: Path, what: str) -> None:
    try:
        done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=3600, check=False)
    except subprocess.TimeoutExpired:
        raise OpsError(f"{what}: no answer within an hour") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise OpsError(f"{what}: {said or f'exit code {done.returncode}'}")


def build_command(
    docker: str, spec: ImageSpec, tags: list[str], version: str, revision: str, build_args: dict[str, str]
) -> list[str]:
    """The `docker build` both targets run; ``build_args`` is where they differ (BASE_IMAGE, TORCH_INDEX)."""
    argv = [docker, "build", "--network=none", "--platform", PLATFORM, "-f", spec.dockerfile]
    for tag in tags:
        argv += ["-t", tag]
    argv += ["--build-arg", f"VERSION={version}", "--build-arg", f"REVISION={revision}"]
    for key in sorted(build_args):
        argv += ["--build-arg", f"{key}={build_args[key]}"]
    return [*argv, "."]


def build(
    docker: str,
    env: dict[str, str],
    repo: Path,
    spec: ImageSpec,
    tags: list[str],
    version: str,
    revision: str,
    build_args: dict[str, str],
    torch: TorchSource,
    on_line: Callable[[str], None],
) -> None:
    """Fill the wheelhouse, then build the image under ``tags`` without network; an OpsError naming the failing
    step when the build fails."""
    if build_args.get("TORCH_INDEX", dockerfile_default(repo, spec, "TORCH_INDEX")) != torch.index:
        raise OpsError(f"TORCH_INDEX={build_args.get('TORCH_INDEX')} but the wheelhouse would hold {torch.index}")
    fill_wheelhouse(repo, spec, torch, on_line)
    run_streamed(
        build_command(docker, spec, tags, version, revision, build_args),
        repo,
        f"docker build of the {spec.name} image failed",
        on_line,
        env={"DOCKER_BUILDKIT": "1", **env},
    )


def run_streamed(
    argv: list[str], repo: Path, what: str, on_line: Callable[[str], None], env: dict[str, str] | None = None
) -> None:
    """Run a docker command with its output streamed to ``on_line``; on failure an OpsError ``what: <its error>``."""
    code, lines = proc.stream(argv, repo, on_line, env=env)
    if code != 0:
        said = next(
            (line.strip() for line in reversed(lines) if "error" in line.lower()),
            lines[-1].strip() if lines else f"exit code {code}",
        )
        raise OpsError(f"{what}: {said}")
