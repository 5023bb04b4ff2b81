"""Input channels in the demo format (docs/data.md): PNG images listed in a manifest.csv.

::

    <channel>/manifest.csv   header "file,label"; file is relative to the channel, label a class name
    <channel>/classes.txt    optional: class names, one a line, in index order
    <channel>/<file>.png     8-bit grayscale (L) or RGB images, all the same size

Images are kept as float32 pixel values in [0, 255]; normalisation lives inside the model, so the
exported artifact takes the same raw pixels a client sends.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from trainer.errors import DataError

MANIFEST = "manifest.csv"
CLASSES = "classes.txt"
_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""16-bit and float images: converting them to 8 bits would silently clip, so they are refused."""


@dataclass(frozen=True, slots=True)
class Split:
    """One channel loaded into memory."""

    images: torch.Tensor
    """float32, shape (N, C, H, W), pixel values in [0, 255]."""

    targets: torch.Tensor
    """int64 class indices, shape (N,)."""

    classes: tuple[str, ...]
    """Class names in index order."""

    def __len__(self) -> int:
        return len(self.targets)


def read_classes(channel: Path) -> tuple[str, ...] | None:
    path = channel / CLASSES
    if not path.exists():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists a class twice: class names must be unique")
    return names


def _read_manifest(channel: Path) -> list[tuple[str, str]]:
    path = channel / MANIFEST
    if not path.exists():
        raise DataError(f"{path} not found: a channel needs a manifest.csv with columns file,label")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path} must have a header row with columns file,label")
        rows = [(row["file"], row["label"]) for row in reader]
    if not rows:
        raise DataError(f"{path} lists no samples: the channel is empty")
    return rows


def _read_image(channel: Path, name: str) -> np.ndarray:
    path = (channel / name).resolve()
    if not path.is_relative_to(channel.resolve()):
        raise DataError(f"{channel / MANIFEST}: sample '{name}' points outside the channel")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _HIGH_DEPTH:
                raise DataError(f"sample {path} is a {img.mode} image: save images as 8-bit grayscale or RGB")
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"sample {path} listed in {channel / MANIFEST} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"sample {path} is not a readable image ({exc})") from None
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_split(channel: Path, classes: tuple[str, ...]) -> Split:
    """Load every sample of ``channel``; labels must be among ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    images: list[np.ndarray] = []
    targets: list[int] = []
    for name, label in _read_manifest(channel):
        if label not in index:
            raise DataError(
                f"{channel / MANIFEST}: sample '{name}' has label '{label}', "
                f"which is not one of the classes ({', '.join(classes)})"
            )
        array = _read_image(channel, name)
        if images and array.shape != images[0].shape:
            raise DataError(
                f"sample {channel / name} has shape {array.shape}, "
                f"but the channel's first image has {images[0].shape}: resize all images to one size"
            )
        images.append(array)
        targets.append(index[label])
    return Split(
        images=torch.from_numpy(np.stack(images)),
        targets=torch.tensor(targets, dtype=torch.int64),
        classes=classes,
    )


def discover_classes(train_channel: Path) -> tuple[str, ...]:
    """classes.txt when the channel has one, else the sorted labels of the manifest."""
    return read_classes(train_channel) or tuple(sorted({label for _, label in _read_manifest(train_channel)}))
