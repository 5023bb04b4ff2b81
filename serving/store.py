"""Which models a server holds, by name and version, and where each artifact lives.

Three ways to say it, in order of precedence:

- ``--models name=path,...``: each path relative to ``--model-store`` (absolute paths must lie inside it;
  nothing outside the store is ever read, symlinks included);
- ``--model-store DIR`` alone: every artifact directory or ``*.tar.gz`` in it, named after the entry;
- neither: the one artifact in ``--model-dir`` (SageMaker's ``/opt/ml/model``), named ``model``.

An artifact path is either one artifact (a directory holding ``manifest.json``, ``code/inference.py`` or
``model.tar.gz``, or an archive file: ``.tar.gz``, ``.tgz``, ``.tar`` or TorchServe's ``.mar``), or a
directory of versions, one artifact per sub-directory named after its version (``resnet/1/``,
``resnet/2/``). One artifact is version ``1``, except a ``.mar`` (its own ``modelVersion``) and a version
folder named by its path (``resnet/3`` in ``--models`` or a management registration is version ``3``, so a
new version can be added beside the loaded ones). The default version of a name is its highest; the
default model (for ``/invocations``) is the first one named.

Planning reads only directory listings, so a bad layout is refused before any model is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".mar")
MANIFEST = "manifest.json"


class LayoutError(Exception):
    """The model store or ``--models`` is not usable; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str
    path: Path


def _is_artifact(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in (MANIFEST, "model.tar.gz", "code/inference.py"))
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _strip_archive_suffix(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def version_key(version: str) -> tuple[int, int | str]:
    """Sort key of versions: numbered ones in numeric order, after any named ones (the highest is the default)."""
    return (1, int(version)) if version.isdigit() else (0, version)


def _mar_version(path: Path) -> str:
    """A .mar's own modelVersion (TorchServe serves it under that version), else "1"."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            version = str(json.loads(zf.read("MAR-INF/MANIFEST.json"))["model"].get("modelVersion") or "1")
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return "1"  # the loader reports what is wrong with the archive, with its name
    return version if NAME.match(version) else "1"


def _versions(name: str, path: Path, store: Path) -> list[ModelRef]:
    if _is_artifact(path):
        if path.suffix == ".mar" and path.is_file():
            return [ModelRef(name, _mar_version(path), path)]
        # a numbered folder below a model's folder (resnet/3) is that version; an entry of the store is "1"
        in_versions = path.name.isdigit() and path.parent != store.resolve()
        return [ModelRef(name, path.name if in_versions else "1", path)]
    if not path.is_dir():
        raise LayoutError(f"model {name!r}: {path} does not exist")
    refs = [
        ModelRef(name, child.name, child)
        for child in sorted(path.iterdir())
        if NAME.match(child.name) and _is_artifact(child)
    ]
    if not refs:
        raise LayoutError(
            f"model {name!r}: {path} holds no artifact (a {MANIFEST} or model.tar.gz) and no "
            "version sub-directories with one"
        )
    return sorted(refs, key=lambda r: version_key(r.version))


def inside(store: Path, path: Path, what: str = "model store") -> Path:
    """``path`` resolved, when it and everything under it (version folders, the artifact's files, links
    included) lie inside ``store`` (the model store, or a multi-model endpoint's directory); else LayoutError."""
    root = store.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise LayoutError(f"{path} is outside the {what} {store}: models are only loaded from inside it")
    if resolved.is_dir():
        seen: set[Path] = set()
        # Links are followed (each is checked first), so a link to a folder inside the store that links out
        # again is caught too; each real folder is walked once, which also ends link cycles.
        for folder, dirs, files in os.walk(resolved, followlinks=True):
            real = Path(folder).resolve()
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            for entry in (*dirs, *files):
                if not (Path(folder) / entry).resolve().is_relative_to(root):
                    raise LayoutError(
                        f"{Path(folder) / entry} links outside the {what} {store}: models are "
                        "only loaded from inside it"
                    )
    return resolved


def plan_one(store: Path, name: str, path: Path) -> list[ModelRef]:
    """The versions of one model ``name`` at ``path`` inside ``store`` (a registration, or one --models entry)."""
    if not NAME.match(name):
        raise LayoutError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (at most 64)")
    return _versions(name, inside(store, path), store)


def plan(model_dir: Path, model_store: Path | None, models: str | None) -> list[ModelRef]:
    """Every (name, version, path) to load, default version of each name last among its versions."""
    if models and model_store is None:
        raise LayoutError("--models needs --model-store: paths in --models are relative to the model store")
    if model_store is not None and not model_store.is_dir():
        raise LayoutError(f"model store {model_store} is not a directory")
    refs: list[ModelRef] = []
    if models and model_store is not None:  # (without a store, --models was refused above)
        seen: set[str] = set()
        for entry in filter(None, (e.strip() for e in models.split(","))):
            name, sep, rel = entry.partition("=")
            name, rel = name.strip(), rel.strip()
            if not sep or not rel:
                raise LayoutError(f"--models entry {entry!r} is not name=path")
            if name in seen:
                raise LayoutError(f"model name {name!r} is given twice in --models")
            seen.add(name)
            refs += plan_one(model_store, name, model_store / rel)
    elif model_store is not None:
        for child in sorted(model_store.iterdir()):
            name = _strip_archive_suffix(child.name)
            if child.name.startswith(".") or not NAME.match(name) or not (child.is_dir() or _is_artifact(child)):
                continue  # hidden entries, READMEs and the like are not models
            refs += _versions(name, inside(model_store, child), model_store)  # its versions and files checked too
        if not refs:
            raise LayoutError(
                f"model store {model_store} holds no artifacts: put one directory or model.tar.gz per model in it"
            )
    else:
        if not model_dir.exists():
            raise LayoutError(f"model path {model_dir} does not exist: set SM_MODEL_DIR to a trained artifact")
        refs = [ModelRef("model", "1", model_dir)]
    return refs
