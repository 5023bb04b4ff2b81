"""The local base image for `make images`: Debian bookworm's own packages, made with mmdebstrap, no registry.

The Dockerfiles start from ``ARG BASE_IMAGE``, whose default is the official Python image pinned by digest: that
is what ships to AWS, and a ``FROM name@sha256:...`` always asks a registry for it. Where no registry can be
reached (this machine, CI), ops builds with this base instead: the same Debian release as that image (bookworm)
and its Python 3.11 (``python3`` from Debian, 3.11.2, where the official image has its own build of 3.11.15):

    mmdebstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates bookworm base.tar \\
        "deb http://deb.debian.org/debian bookworm main" ... (updates and security too)
    docker import --change 'ENV LANG=C.UTF-8' base.tar deepcloud-base:bookworm-<key>-<date>

``passwd`` for the images' groupadd/useradd, ``python3-venv`` for their ``python3 -m venv``, and documentation, man
pages and translations left out (as the official slim images do). mmdebstrap installs no Recommends.

The base is cached in the engine's image store and used again while it is younger than ``MAX_AGE_DAYS`` and was
made by the same recipe (``<key>``, a hash of everything above): older than that it misses Debian's security
updates, so it is made again under a new tag, which the image tags then follow (its time: README, 'The images').
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ops.container.engine import Engine, engine_dir, last_line
from ops.errors import OpsError

SUITE = "bookworm"
"""The Debian release of the official python:3.11.15-slim-bookworm base."""
PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates")
SOURCES = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
IMPORT_CHANGES = ("ENV LANG=C.UTF-8",)
"""As the official Python image sets it."""
REPOSITORY = "deepcloud-base"
MAX_AGE_DAYS = 7
MMDEBSTRAP_TIMEOUT_S = 900
INSTALL_HINT = "install mmdebstrap (`apt-get install mmdebstrap`, as .ci/run does with scripts/install-engine)"


def recipe_key() -> str:
    recipe = {
        "suite": SUITE,
        "variant": "minbase",
        "packages": PACKAGES,
        "sources": SOURCES,
        "dpkg": DPKG_OPTIONS,
        "changes": IMPORT_CHANGES,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _tags(engine: Engine, prefix: str) -> list[str]:
    listed = engine.run("images", REPOSITORY, "--format", "{{.Tag}}").stdout.split()
    return sorted(tag for tag in listed if tag.startswith(prefix))


def ensure_base(engine: Engine, say: Callable[[str], None] = print) -> str:
    """The reference of a local base image made by today's recipe, younger than MAX_AGE_DAYS; made if need be."""
    prefix = f"{SUITE}-{recipe_key()}-"
    today = datetime.now(UTC)
    current = _tags(engine, prefix)
    if current:
        made = datetime.strptime(current[-1].removeprefix(prefix), "%Y%m%d").replace(tzinfo=UTC)
        if (today - made).days < MAX_AGE_DAYS:
            return f"{REPOSITORY}:{current[-1]}"
    tag = f"{REPOSITORY}:{prefix}{today:%Y%m%d}"
    make_base(engine, tag, say)
    for old in current:
        if f"{REPOSITORY}:{old}" != tag:
            engine.run("rmi", f"{REPOSITORY}:{old}", check=False)  # the images built on it keep its layers
    return tag


def make_base(engine: Engine, tag: str, say: Callable[[str], None] = print) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise OpsError(f"mmdebstrap is not installed, and the local base image is made with it: {INSTALL_HINT}")
    scratch = engine_dir() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    tarball = scratch / f"{tag.rsplit(':', 1)[1]}.tar"
    argv = [
        mmdebstrap,
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        "--format=tar",
        SUITE,
        str(tarball),
        *SOURCES,
    ]
    say(f"making the base image {tag}: mmdebstrap {SUITE} with {', '.join(PACKAGES)}")
    started = time.monotonic()
    try:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise OpsError(
                f"mmdebstrap did not finish within {MMDEBSTRAP_TIMEOUT_S} s: check the network to deb.debian.org"
            ) from None
        if done.returncode != 0:
            raise OpsError(f"mmdebstrap failed (exit code {done.returncode}): {last_line(done.stderr + done.stdout)}")
        changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
        engine.run(
            "import",
            *changes,
            "--message",
            f"mmdebstrap {SUITE} minbase + {' '.join(PACKAGES)}",
            str(tarball),
            tag,
            timeout=600,
        )
    finally:
        tarball.unlink(missing_ok=True)
    say(f"made {tag} in {time.monotonic() - started:.0f} s")
