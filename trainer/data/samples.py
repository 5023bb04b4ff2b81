"""One channel held in memory (:class:`Split`), and the bookkeeping every format's reader shares: collecting
good samples, skipping bad ones under ``skip_bad_samples``, decoding one image, one image size a channel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from trainer.errors import DataError

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

    skipped: tuple[str, ...] = ()
    """Samples left out by ``skip_bad_samples``, relative to the channel: a file (``cat/3.jpg``, ``part-1.npz``)
    or an array row (``part-0.npz[17]``)."""

    def __len__(self) -> int:
        return len(self.targets)


class Collector:
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


def decode_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 pixels of an 8-bit image; DataError naming the file when it cannot be used."""
    try:
        with Image.open(path) as opened:
            opened.load()
            if opened.mode in _HIGH_DEPTH:
                raise DataError(f"sample {path} is a {opened.mode} image: save images as 8-bit grayscale or RGB")
            img: Image.Image = opened
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
            array = np.asarray(img, dtype=np.float32)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"sample {path} is not a readable image ({exc})") from None
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


def check_shape(collector: Collector, path: Path, array: np.ndarray) -> None:
    if collector.images and array.shape != collector.images[0].shape[1:]:
        raise DataError(
            f"sample {path} has shape {array.shape}, "
            f"but the channel's first image has {collector.images[0].shape[1:]}: resize all images to one size"
        )
