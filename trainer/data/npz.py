"""``.npz`` arrays: ``<channel>/*.npz`` with arrays ``x`` (N,H,W or N,C,H,W; pixel values 0..255) and ``y`` (class
indices), read with ``allow_pickle=False``: an object array is refused, never unpickled."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from trainer.data.samples import Collector, Split
from trainer.errors import DataError

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class _Unreadable(DataError):
    """The file as a whole cannot be read (truncated, not a zip, a bad CRC): skippable with skip_bad_samples."""


def npz_files(channel: Path) -> list[Path]:
    try:
        return sorted(
            p for p in channel.iterdir() if p.suffix.lower() == ".npz" and not p.name.startswith(".") and p.is_file()
        )
    except OSError:
        return []


def _open_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of one .npz file, read with allow_pickle=False."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise _Unreadable(f"{path} is not a readable .npz file ({exc})") from None
    if magic not in _ZIP_MAGIC:
        raise _Unreadable(f"{path} is not a readable .npz file (no zip header): save it with np.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in names if name not in data.files]
            if missing:
                raise DataError(
                    f"{path} has no array '{missing[0]}': an .npz channel file needs arrays x (images) and "
                    f"y (class indices); it has {', '.join(data.files) or 'none'}"
                )
            arrays = {}
            for name in names:
                try:
                    arrays[name] = data[name]
                except ValueError as exc:
                    if "pickle" not in str(exc).lower() and "object arrays" not in str(exc).lower():
                        raise
                    raise DataError(
                        f"{path}: array '{name}' holds Python objects (dtype=object): refused, since loading it "
                        "would unpickle code from the file; save x and y as plain numeric arrays"
                    ) from None
            return arrays
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise _Unreadable(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _check_labels(path: Path, y: np.ndarray, count: int | None) -> None:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: y has dtype {y.dtype} and shape {y.shape}: expected a 1-D integer array of class indices"
        )
    if count is not None and len(y) != count:
        raise DataError(f"{path}: x holds {count} samples but y has {len(y)} labels: they must match")
    negative = np.flatnonzero(y < 0)
    if negative.size:
        i = int(negative[0])
        raise DataError(f"{path}: sample {i} has label {y[i]}: class indices start at 0")


def npz_classes(channel: Path, skip: bool) -> tuple[str, ...]:
    highest = -1
    skipped = []
    for path in npz_files(channel):
        try:
            y = _open_npz(path, ("y",))["y"]
        except _Unreadable as exc:
            if not skip:
                raise
            skipped.append(str(exc))
            continue
        _check_labels(path, y, None)
        if y.size:
            highest = max(highest, int(y.max()))
    if highest < 0:
        if skipped:
            raise DataError(f"every .npz file in {channel} is unreadable (the first: {skipped[0]})")
        raise DataError(f"the .npz files in {channel} hold no samples: the channel is empty")
    return tuple(str(i) for i in range(highest + 1))


def load_npz(channel: Path, classes: tuple[str, ...], out: Collector) -> Split:
    shape: tuple[int, ...] | None = None
    first = None
    for path in npz_files(channel):
        try:
            arrays = _open_npz(path, ("x", "y"))
        except _Unreadable as exc:
            out.bad(path.name, exc)
            continue
        x, y = arrays["x"], arrays["y"]
        if x.dtype.kind not in "uif" or x.ndim not in (3, 4):
            raise DataError(
                f"{path}: x has dtype {x.dtype} and shape {x.shape}: expected uint8 or float pixel values "
                "0..255 shaped (N, H, W) or (N, C, H, W)"
            )
        if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
            raise DataError(
                f"{path}: x has shape {x.shape}, which looks channels-last (N, H, W, C): "
                "save np.moveaxis(x, -1, 1) to make it (N, C, H, W)"
            )
        _check_labels(path, y, len(x))
        beyond = np.flatnonzero(y >= len(classes))
        if beyond.size:
            i = int(beyond[0])
            raise DataError(
                f"{path}: sample {i} has label {y[i]}, which is not a class index 0..{len(classes) - 1} "
                f"({len(classes)} classes)"
            )
        sample = (1, *x.shape[1:]) if x.ndim == 3 else tuple(x.shape[1:])
        if shape is None:
            shape, first = sample, path
        elif sample != shape:
            raise DataError(
                f"{path}: x holds samples of shape {sample}, but {first} has {shape}: "
                "all arrays must share one image size"
            )
        keep = np.ones(len(x), dtype=bool)
        if x.dtype != np.uint8:
            flat = x.reshape(len(x), int(np.prod(x.shape[1:])))
            with np.errstate(invalid="ignore"):
                wrong = ~np.isfinite(flat).all(axis=1) | (flat < 0).any(axis=1) | (flat > 255).any(axis=1)
            for row in np.flatnonzero(wrong):
                out.bad(
                    f"{path.name}[{row}]",
                    DataError(
                        f"{path}: sample {row} has pixel values outside 0..255 (or NaN/inf): x holds raw pixel values"
                    ),
                )
            keep = ~wrong
        if not keep.all():
            x, y = x[keep], y[keep]
        out.add(x.astype(np.float32, copy=False).reshape(-1, *shape), y.astype(np.int64))
    return out.split(f"the .npz files in {channel} hold no samples: the channel is empty")
