"""ImageFolder: ``<channel>/<class>/**/*.png|jpg|jpeg``, one sub-folder per class, as torchvision reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.samples import Collector, Split, check_shape, decode_image
from trainer.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What an ImageFolder channel reads (case-insensitive); other files in class folders are ignored."""


def class_folders(channel: Path) -> list[str]:
    try:
        return sorted(p.name for p in channel.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def load_imagefolder(channel: Path, classes: tuple[str, ...], out: Collector) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    for folder in class_folders(channel):
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
                array = decode_image(path)
            except (DataError, FileNotFoundError) as exc:
                out.bad(name, exc if isinstance(exc, DataError) else DataError(f"sample {path} vanished ({exc})"))
                continue
            check_shape(out, path, array)
            out.add(array[None], np.array([index[folder]]))
    return out.split(f"{channel} holds no PNG or JPEG images in its class folders: the channel is empty")
