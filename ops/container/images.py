"""The two images built here, for `make images`, TARGET=container and the container tests.

The build is build.py's, the same one `make train|deploy TARGET=aws` runs before pushing; here it gets
the local Debian base (base.py) as BASE_IMAGE and the CPU torch of this host's pip configuration
(TORCH_INDEX=cpu). Images are tagged ``deepcloud-<name>:<content digest, 12 hex>`` and ``deepcloud-<name>:local``;
an image whose digest tag exists is not built again unless asked (`make images` always runs the build, which
BuildKit's cache makes quick when nothing changed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops.container import base as container_base
from ops.container import build as container_build
from ops.container.build import IMAGES, ImageSpec, TorchSource, content_digest
from ops.container.engine import Engine
from ops.revision import revision as git_revision

LOCAL_TORCH = TorchSource("cpu", None)
"""torch as this host's pip finds it: the CPU wheel on local disk here (an AWS build downloads a CUDA one)."""


@dataclass(frozen=True, slots=True)
class LocalImage:
    name: str
    ref: str
    """``deepcloud-<name>:<digest12>``: what to `docker run`."""

    built: bool
    seconds: float
    """Of the wheelhouse and the build (or of finding the image), not of making the base."""


def repository(spec: ImageSpec) -> str:
    return f"deepcloud-{spec.name}"


def build_args(base: str) -> dict[str, str]:
    return {"BASE_IMAGE": base, "TORCH_INDEX": LOCAL_TORCH.index}


def ensure(
    engine: Engine, repo: Path, spec: ImageSpec, say: Callable[[str], None] = print, force: bool = False
) -> LocalImage:
    """The image of the current sources in the engine: found by its content digest, else (or when ``force``) built."""
    args = build_args(container_base.ensure_base(engine, say))  # says so, with its time, when it makes one
    started = time.monotonic()
    digest12 = content_digest(repo, spec, args)[:12]
    ref = f"{repository(spec)}:{digest12}"
    if not force and engine.image_exists(ref):
        return LocalImage(spec.name, ref, built=False, seconds=time.monotonic() - started)
    revision = git_revision(repo, short=True)
    say(f"building {spec.name} image {ref} (Docker {engine.version}, {container_build.PLATFORM}, no network)")
    container_build.build(
        engine.docker,
        engine.env,
        repo,
        spec,
        [ref, f"{repository(spec)}:local"],
        f"{revision}-{digest12}",
        revision,
        args,
        LOCAL_TORCH,
        lambda line: say(f"  {line}"),
    )
    return LocalImage(spec.name, ref, built=True, seconds=time.monotonic() - started)


def ensure_all(
    engine: Engine, repo: Path, say: Callable[[str], None] = print, force: bool = False
) -> dict[str, LocalImage]:
    return {name: ensure(engine, repo, spec, say, force) for name, spec in IMAGES.items()}


def image_size(engine: Engine, ref: str) -> int:
    """Bytes of the image's layers, as `docker images` counts its SIZE."""
    return int(engine.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())
