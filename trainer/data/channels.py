"""Which format a channel is in, and loading the job's channels: the entry points of :mod:`trainer.data`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.data.imagefolder import class_folders, load_imagefolder
from trainer.data.manifest import MANIFEST, load_manifest, read_manifest
from trainer.data.npz import load_npz, npz_classes, npz_files
from trainer.data.samples import Collector, Split
from trainer.errors import DataError
from trainer.sagemaker_env import SageMakerEnv

CLASSES = "classes.txt"
_SHOW_SKIPPED = 10
"""How many skipped samples the report names before it says "and N more"."""


def detect_format(channel: Path) -> str:
    """``"manifest"``, ``"npz"`` or ``"imagefolder"``; ``"manifest"`` when nothing matches, so that the error
    names what a channel needs."""
    if (channel / MANIFEST).exists():
        return "manifest"
    arrays, folders = npz_files(channel), class_folders(channel)
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
        return read_classes(train_channel) or tuple(sorted({label for _, label in read_manifest(train_channel)}))
    listed = read_classes(train_channel)
    if listed:
        return listed
    if fmt == "imagefolder":
        folders = class_folders(train_channel)
        if len(folders) == 1:
            raise DataError(
                f"{train_channel} has one sub-folder ('{folders[0]}') and no {MANIFEST}: an ImageFolder channel "
                f"needs one sub-folder per class (two or more); a demo-format channel needs a {MANIFEST}"
            )
        return tuple(folders)
    return npz_classes(train_channel, skip_bad_samples)


def load_split(channel: Path, classes: tuple[str, ...], skip_bad_samples: bool = False) -> Split:
    """Load every sample of ``channel``; labels must be among ``classes``."""
    loader = {"manifest": load_manifest, "imagefolder": load_imagefolder, "npz": load_npz}[detect_format(channel)]
    return loader(channel, classes, Collector(channel, classes, skip_bad_samples))


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
