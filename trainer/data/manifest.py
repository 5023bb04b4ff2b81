"""The demo format: ``<channel>/manifest.csv`` (header ``file,label``) naming 8-bit PNGs inside the channel."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from trainer.data.samples import Collector, Split, check_shape, decode_image
from trainer.errors import DataError

MANIFEST = "manifest.csv"


def read_manifest(channel: Path) -> list[tuple[str, str]]:
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


def load_manifest(channel: Path, classes: tuple[str, ...], out: Collector) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    root = channel.resolve()
    for name, label in read_manifest(channel):
        if label not in index:
            raise DataError(
                f"{channel / MANIFEST}: sample '{name}' has label '{label}', "
                f"which is not one of the classes ({', '.join(classes)})"
            )
        path = (channel / name).resolve()
        if not path.is_relative_to(root):
            raise DataError(f"{channel / MANIFEST}: sample '{name}' points outside the channel")
        try:
            array = decode_image(path)
        except FileNotFoundError:
            out.bad(name, DataError(f"sample {path} listed in {channel / MANIFEST} does not exist"))
            continue
        except DataError as exc:
            out.bad(name, exc)
            continue
        check_shape(out, channel / name, array)
        out.add(array[None], np.array([index[label]]))
    return out.split(f"{channel / MANIFEST} lists no samples: the channel is empty")
