"""The demo channel format: every unreadable or inconsistent sample is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data.channels import discover_classes, load_split
from trainer.errors import DataError


def _channel(root: Path, rows: list[tuple[str, str]], size: tuple[int, int] = (8, 8)) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["file,label"]
    for name, label in rows:
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode="L").save(root / name)
        lines.append(f"{name},{label}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_loads_pixels_unscaled_with_class_indices(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "c", [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")])
    classes = discover_classes(channel)
    split = load_split(channel, classes)
    assert classes == ("cat", "dog")
    assert split.images.shape == (3, 1, 8, 8)
    assert split.targets.tolist() == [0, 1, 0]
    expected = np.asarray(Image.open(channel / "b.png"), dtype=np.float32)
    assert np.array_equal(split.images[1, 0].numpy(), expected)


def test_classes_txt_fixes_the_order(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "c", [("a.png", "cat")])
    (channel / "classes.txt").write_text("zebra\ncat\n")
    assert discover_classes(channel) == ("zebra", "cat")


def test_corrupt_sample_is_named(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "c", [("a.png", "cat"), ("b.png", "dog")])
    (channel / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"sample .*b\.png is not a readable image"):
        load_split(channel, ("cat", "dog"))


def test_missing_sample_unknown_label_and_size_mismatch(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "c", [("a.png", "cat")])
    (channel / "manifest.csv").write_text("file,label\na.png,cat\ngone.png,cat\n")
    with pytest.raises(DataError, match=r"gone\.png listed in .*manifest\.csv does not exist"):
        load_split(channel, ("cat",))
    with pytest.raises(DataError, match=r"has label 'cat', which is not one of the classes \(dog\)"):
        load_split(_channel(tmp_path / "d", [("a.png", "cat")]), ("dog",))
    mixed = _channel(tmp_path / "e", [("a.png", "cat")])
    Image.fromarray(np.zeros((9, 9), dtype=np.uint8)).save(mixed / "b.png")
    (mixed / "manifest.csv").write_text("file,label\na.png,cat\nb.png,cat\n")
    with pytest.raises(DataError, match=r"b\.png has shape \(1, 9, 9\).*resize all images"):
        load_split(mixed, ("cat",))


def test_manifest_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"manifest\.csv not found: a channel needs a manifest\.csv"):
        discover_classes(empty)
    (empty / "manifest.csv").write_text("path,class\nx.png,1\n")
    with pytest.raises(DataError, match="header row with columns file,label"):
        discover_classes(empty)
    (empty / "manifest.csv").write_text("file,label\n")
    with pytest.raises(DataError, match="lists no samples"):
        discover_classes(empty)
    (empty / "manifest.csv").write_text("file,label\n../../etc/passwd,1\n")
    with pytest.raises(DataError, match="points outside the channel"):
        load_split(empty, ("1",))


def test_high_depth_images_are_refused_not_clipped(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "c", [("a.png", "cat")])
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(channel / "a.png")
    with pytest.raises(DataError, match=r"a\.png is a I;16 image: save images as 8-bit grayscale or RGB"):
        load_split(channel, ("cat",))
