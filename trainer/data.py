"""Input channels (docs/data.md): three layouts, told apart per channel directory.

::

    demo format   <channel>/manifest.csv   header "file,label"; file relative to the channel, label a class name
                  <channel>/<file>.png     8-bit grayscale (L) or RGB images, all the same size
    ImageFolder   <channel>/<class>/**/*.png|jpg|jpeg   one sub-folder per class
    .npz arrays   <channel>/*.npz          arrays x (N,H,W or N,C,H,W; pixel values 0..255) and y (class indices)

    any format    <channel>/classes.txt    optional: class names, one a line, in index order

A channel with a manifest.csv is in the demo format; otherwise one with ``*.npz`` files is in the .npz
format, and one with class sub-folders an ImageFolder. Images are kept as float32 pixel values in [0, 255],
channels first; normalisation lives inside the model, so the exported artifact takes the same raw pixels
a client sends. ``.npz`` files are read with ``allow_pickle=False``: an object array is refused, never
unpickled.

A sample that cannot be read (a missing or undecodable image, an unreadable .npz file, pixel values
outside 0..255) fails the channel with an error naming it; with ``skip_bad_samples`` it is skipped instead
and listed in :attr:`Split.skipped`. Mistakes in the layout itself (labels, shapes, missing arrays) always
fail: skipping would silently train on something else than the user meant.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from trainer.errors import DataError
from trainer.sagemaker_env import SageMakerEnv

MANIFEST = "manifest.csv"
CLASSES = "classes.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What an ImageFolder channel reads (case-insensitive); other files in class folders are ignored."""
_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""16-bit and float images: converting them to 8 bits would silently clip, so they are refused."""
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SHOW_SKIPPED = 10
"""How many skipped samples the report names before it says "and N more"."""


@dataclass(frozen=True, slots=True)
class Split:
    """One channel loaded into memory."""

    images: torch.Tensor
    """float32, shape (N, C, H, W), pixel values in [0, 255]."""

    targets: torch.Tensor
    """int64 class indices, shape (N,)."""

    classes: tuple[str, ...]
    """Class names in index order."""

    skipped: tuple[str, ...] = ()
    """Samples left out by ``skip_bad_samples``, relative to the channel: a file (``cat/3.jpg``, ``part-1.npz``)
    or an array row (``part-0.npz[17]``)."""

    def __len__(self) -> int:
        return len(self.targets)


# ---------------------------------------------------------------------------------------------------- public API


def detect_format(channel: Path) -> str:
    """``"manifest"``, ``"npz"`` or ``"imagefolder"``; ``"manifest"`` when nothing matches, so that the error
    names what a channel needs."""
    if (channel / MANIFEST).exists():
        return "manifest"
    arrays, folders = _npz_files(channel), _class_folders(channel)
    if arrays and folders:
        raise DataError(
            f"{channel} holds both .npz files ({arrays[0].name}, ...) and sub-folders ({folders[0]}, ...): "
            "keep one format per channel"
        )
    if arrays:
        return "npz"
    return "imagefolder" if folders else "manifest"


def discover_classes(train_channel: Path, skip_bad_samples: bool = False) -> tuple[str, ...]:
    """classes.txt when the channel has one; else the sorted manifest labels (demo format), the sorted
    class folder names (ImageFolder), or ``"0"`` .. ``str(max(y))`` (.npz)."""
    fmt = detect_format(train_channel)
    if fmt == "manifest":
        return read_classes(train_channel) or tuple(sorted({label for _, label in _read_manifest(train_channel)}))
    listed = read_classes(train_channel)
    if listed:
        return listed
    if fmt == "imagefolder":
        folders = _class_folders(train_channel)
        if len(folders) == 1:
            raise DataError(
                f"{train_channel} has one sub-folder ('{folders[0]}') and no {MANIFEST}: an ImageFolder channel "
                f"needs one sub-folder per class (two or more); a demo-format channel needs a {MANIFEST}"
            )
        return tuple(folders)
    return _npz_classes(train_channel, skip_bad_samples)


def load_split(channel: Path, classes: tuple[str, ...], skip_bad_samples: bool = False) -> Split:
    """Load every sample of ``channel``; labels must be among ``classes``."""
    loader = {"manifest": _load_manifest, "imagefolder": _load_imagefolder, "npz": _load_npz}[detect_format(channel)]
    return loader(channel, classes, _Collector(channel, classes, skip_bad_samples))


def load_channels(
    env: SageMakerEnv, skip_bad_samples: bool = False, *, say: Callable[[str], None] | None = None
) -> tuple[Split, Split, Split | None]:
    """The train and validation channels (required) and test (optional), checked to share one image shape.

    Channels given as ``s3://`` URIs are downloaded first (:meth:`SageMakerEnv.channel`). Skipped samples
    are reported through ``say`` (default: a line on stdout), one line per channel that had any; pass a
    rank-0-only function under DDP.
    """
    report = say or (lambda line: print(line, flush=True))
    train_dir = env.channel("train")
    val_dir = env.channel("validation")
    test_dir = env.channel("test") if env.has_channel("test") else None
    classes = discover_classes(train_dir, skip_bad_samples)
    train_split = load_split(train_dir, classes, skip_bad_samples)
    val_split = load_split(val_dir, classes, skip_bad_samples)
    test_split = load_split(test_dir, classes, skip_bad_samples) if test_dir is not None else None
    shape = tuple(train_split.images.shape[1:])
    for name, split in (("validation", val_split), ("test", test_split)):
        if split is not None and tuple(split.images.shape[1:]) != shape:
            raise DataError(
                f"channel '{name}' has images of shape {tuple(split.images.shape[1:])}, "
                f"but 'train' has {shape}: all channels must share one image size"
            )
    for name, split in (("train", train_split), ("validation", val_split), ("test", test_split)):
        if split is not None and split.skipped:
            shown = ", ".join(split.skipped[:_SHOW_SKIPPED])
            more = f" and {len(split.skipped) - _SHOW_SKIPPED} more" if len(split.skipped) > _SHOW_SKIPPED else ""
            report(f"skipped_samples={len(split.skipped)} channel={name}: {shown}{more}")
    return train_split, val_split, test_split


def read_classes(channel: Path) -> tuple[str, ...] | None:
    path = channel / CLASSES
    if not path.exists():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists a class twice: class names must be unique")
    return names


# ------------------------------------------------------------------------------------------ shared bookkeeping


class _Collector:
    """Accumulates the good samples of one channel and, with skip_bad_samples, the names of the bad ones."""

    def __init__(self, channel: Path, classes: tuple[str, ...], skip: bool) -> None:
        self.channel = channel
        self.classes = classes
        self.skip = skip
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.skipped: list[str] = []
        self.first_problem = ""

    def bad(self, sample: str, error: DataError) -> None:
        """A sample that cannot be read: fail, or with skip_bad_samples count it and go on."""
        if not self.skip:
            raise error
        self.skipped.append(sample)
        self.first_problem = self.first_problem or str(error)

    def add(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.images.append(images)
        self.targets.append(targets)

    def split(self, empty: str) -> Split:
        if not any(len(t) for t in self.targets):
            if self.skipped:
                raise DataError(
                    f"every sample in {self.channel} is unreadable ({len(self.skipped)} skipped; "
                    f"the first: {self.first_problem})"
                )
            raise DataError(empty)
        return Split(
            images=torch.from_numpy(np.concatenate(self.images)),
            targets=torch.from_numpy(np.concatenate(self.targets).astype(np.int64)),
            classes=self.classes,
            skipped=tuple(self.skipped),
        )


def _decode_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 pixels of an 8-bit image; DataError naming the file when it cannot be used."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _HIGH_DEPTH:
                raise DataError(f"sample {path} is a {img.mode} image: save images as 8-bit grayscale or RGB")
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"sample {path} is not a readable image ({exc})") from None
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


def _check_shape(collector: _Collector, path: Path, array: np.ndarray) -> None:
    if collector.images and array.shape != collector.images[0].shape[1:]:
        raise DataError(
            f"sample {path} has shape {array.shape}, "
            f"but the channel's first image has {collector.images[0].shape[1:]}: resize all images to one size"
        )


# ------------------------------------------------------------------------------------------------- demo format


def _read_manifest(channel: Path) -> list[tuple[str, str]]:
    path = channel / MANIFEST
    if not path.exists():
        raise DataError(
            f"{path} not found: a channel needs a manifest.csv with columns file,label "
            "(or one sub-folder of PNG/JPEG images per class, or .npz files with arrays x and y)"
        )
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path} must have a header row with columns file,label")
        rows = [(row["file"], row["label"]) for row in reader]
    if not rows:
        raise DataError(f"{path} lists no samples: the channel is empty")
    return rows


def _load_manifest(channel: Path, classes: tuple[str, ...], out: _Collector) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    root = channel.resolve()
    for name, label in _read_manifest(channel):
        if label not in index:
            raise DataError(
                f"{channel / MANIFEST}: sample '{name}' has label '{label}', "
                f"which is not one of the classes ({', '.join(classes)})"
            )
        path = (channel / name).resolve()
        if not path.is_relative_to(root):
            raise DataError(f"{channel / MANIFEST}: sample '{name}' points outside the channel")
        try:
            array = _decode_image(path)
        except FileNotFoundError:
            out.bad(name, DataError(f"sample {path} listed in {channel / MANIFEST} does not exist"))
            continue
        except DataError as exc:
            out.bad(name, exc)
            continue
        _check_shape(out, channel / name, array)
        out.add(array[None], np.array([index[label]]))
    return out.split(f"{channel / MANIFEST} lists no samples: the channel is empty")


# ------------------------------------------------------------------------------------------------- ImageFolder


def _class_folders(channel: Path) -> list[str]:
    try:
        return sorted(p.name for p in channel.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _load_imagefolder(channel: Path, classes: tuple[str, ...], out: _Collector) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    for folder in _class_folders(channel):
        if folder not in index:
            raise DataError(
                f"{channel}: class folder '{folder}' is not one of the classes ({', '.join(classes)}): "
                f"rename or remove it{' (or list it in the train channel classes.txt)' if classes else ''}"
            )
        files = sorted(
            p
            for p in (channel / folder).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(channel).parts)
        )
        for path in files:
            name = path.relative_to(channel).as_posix()
            try:
                array = _decode_image(path)
            except (DataError, FileNotFoundError) as exc:
                out.bad(name, exc if isinstance(exc, DataError) else DataError(f"sample {path} vanished ({exc})"))
                continue
            _check_shape(out, path, array)
            out.add(array[None], np.array([index[folder]]))
    return out.split(f"{channel} holds no PNG or JPEG images in its class folders: the channel is empty")


# ------------------------------------------------------------------------------------------------- .npz arrays


class _Unreadable(DataError):
    """The file as a whole cannot be read (truncated, not a zip, a bad CRC): skippable with skip_bad_samples."""


def _npz_files(channel: Path) -> list[Path]:
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


def _npz_classes(channel: Path, skip: bool) -> tuple[str, ...]:
    highest = -1
    skipped = []
    for path in _npz_files(channel):
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


def _load_npz(channel: Path, classes: tuple[str, ...], out: _Collector) -> Split:
    shape: tuple[int, ...] | None = None
    first = None
    for path in _npz_files(channel):
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
            for i in np.flatnonzero(wrong):
                out.bad(
                    f"{path.name}[{i}]",
                    DataError(
                        f"{path}: sample {i} has pixel values outside 0..255 (or NaN/inf): x holds raw pixel values"
                    ),
                )
            keep = ~wrong
        if not keep.all():
            x, y = x[keep], y[keep]
        out.add(x.astype(np.float32, copy=False).reshape(-1, *shape), y.astype(np.int64))
    return out.split(f"the .npz files in {channel} hold no samples: the channel is empty")
