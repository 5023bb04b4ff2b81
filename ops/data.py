"""`make data`: the scikit-learn 8x8 digits as PNG channels in the trainer's demo format (docs/data.md)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SPLITS = {"train": 0.7, "validation": 0.1, "test": 0.2}
COMPLETE = ".complete"


def _write_channel(channel: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    (channel / "images").mkdir(parents=True)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"images/{i:05d}.png"
        Image.fromarray(image, mode="L").save(channel / name, format="PNG")
        rows.append((name, classes[label]))
    with (channel / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    (channel / "classes.txt").write_text("\n".join(classes) + "\n")


def dataset_is_complete(dest: Path) -> bool:
    """Whether a whole dataset is already at ``dest`` (its completion marker is written last)."""
    return (dest / COMPLETE).exists()


def prepare_digits(dest: Path, seed: int = 0) -> dict[str, int]:
    """Write the dataset to ``dest`` atomically (build beside it, then rename); returns split sizes.

    A complete dataset already at ``dest`` is kept as is, so `make data` is cheap to repeat.
    """
    if dataset_is_complete(dest):
        return {name: sum(1 for _ in (dest / name / "images").iterdir()) for name in SPLITS}
    digits = load_digits()
    # 0..16 intensities to the 0..255 range of an 8-bit grayscale PNG.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    classes = [str(name) for name in digits.target_names]
    idx = np.arange(len(labels))
    train_idx, rest = train_test_split(idx, train_size=SPLITS["train"], stratify=labels, random_state=seed)
    val_share = SPLITS["validation"] / (SPLITS["validation"] + SPLITS["test"])
    val_idx, test_idx = train_test_split(rest, train_size=val_share, stratify=labels[rest], random_state=seed)

    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, part in (("train", train_idx), ("validation", val_idx), ("test", test_idx)):
            _write_channel(tmp / name, images[part], labels[part], classes)
        (tmp / COMPLETE).write_text(f"seed={seed}\n")
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)}
