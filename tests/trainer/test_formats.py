"""ImageFolder and .npz channels, bad samples in every format, skip_bad_samples, and load_channels."""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data.channels import detect_format, discover_classes, load_channels, load_split
from trainer.errors import DataError
from trainer.sagemaker_env import SageMakerEnv

RNG = np.random.default_rng(0)


def _image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L", fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path, format=fmt)
    return pixels


def _folder(root: Path, files: dict[str, str], size: tuple[int, int] = (8, 8)) -> Path:
    """An ImageFolder channel: ``{"cat/a.png": "L", ...}``."""
    for name, mode in files.items():
        _image(root / name, size, mode)
    return root


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _digits(count: int, labels: int = 3, shape: tuple[int, ...] = (8, 8), dtype: type = np.uint8):
    x = RNG.integers(0, 256, (count, *shape)).astype(dtype)
    y = np.arange(count) % labels
    return x, y


# ---------------------------------------------------------------------------------------------------- detection


def test_each_layout_is_detected(tmp_path: Path) -> None:
    manifest = tmp_path / "m"
    manifest.mkdir()
    (manifest / "manifest.csv").write_text("file,label\n")
    assert detect_format(manifest) == "manifest"
    assert detect_format(_folder(tmp_path / "f", {"cat/a.png": "L", "dog/b.png": "L"})) == "imagefolder"
    assert detect_format(_npz(tmp_path / "n" / "part-0.npz", x=np.zeros((1, 2, 2)), y=np.zeros(1, int)).parent) == "npz"
    (tmp_path / "empty").mkdir()
    assert detect_format(tmp_path / "empty") == "manifest"  # so the error says what a channel needs


def test_a_channel_with_two_layouts_is_refused(tmp_path: Path) -> None:
    channel = _folder(tmp_path / "c", {"cat/a.png": "L"})
    _npz(channel / "part-0.npz", x=np.zeros((1, 2, 2)), y=np.zeros(1, int))
    with pytest.raises(DataError, match=r"holds both \.npz files \(part-0\.npz, \.\.\.\) and sub-folders \(cat"):
        detect_format(channel)


def test_empty_channel_names_every_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.csv not found: .*sub-folder of PNG/JPEG images per class.*\.npz"):
        discover_classes(tmp_path)


# -------------------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_png_and_jpeg(tmp_path: Path) -> None:
    channel = tmp_path / "c"
    cat = _image(channel / "cat" / "a.png")
    _image(channel / "dog" / "nested" / "b.JPG", fmt="JPEG")
    _image(channel / "dog" / "c.jpeg", fmt="JPEG")
    (channel / "dog" / "notes.txt").write_text("not an image")
    _image(channel / "dog" / ".hidden.png")
    _image(channel / ".cache" / "x.png")
    classes = discover_classes(channel)
    split = load_split(channel, classes)
    assert classes == ("cat", "dog")
    assert str(split.images.dtype) == "torch.float32"
    assert split.images.shape == (3, 1, 8, 8)
    assert split.targets.tolist() == [0, 1, 1]
    assert split.skipped == ()
    assert np.array_equal(split.images[0, 0].numpy(), cat.astype(np.float32))
    jpeg = np.asarray(Image.open(channel / "dog" / "c.jpeg"), dtype=np.float32)
    assert np.array_equal(split.images[1, 0].numpy(), jpeg)  # files in sorted order: c.jpeg before nested/b.JPG


def test_imagefolder_rgb_is_channels_first(tmp_path: Path) -> None:
    channel = _folder(tmp_path / "c", {"cat/a.png": "RGB", "dog/b.png": "RGB"}, size=(4, 6))
    split = load_split(channel, discover_classes(channel))
    assert split.images.shape == (2, 3, 4, 6)
    expected = np.asarray(Image.open(channel / "dog" / "b.png"), dtype=np.float32).transpose(2, 0, 1)
    assert np.array_equal(split.images[1].numpy(), expected)


def test_imagefolder_classes_txt_fixes_the_order_and_unknown_folders_fail(tmp_path: Path) -> None:
    channel = _folder(tmp_path / "c", {"cat/a.png": "L", "dog/b.png": "L"})
    (channel / "classes.txt").write_text("dog\ncat\nbird\n")
    classes = discover_classes(channel)
    assert classes == ("dog", "cat", "bird")
    assert load_split(channel, classes).targets.tolist() == [1, 0]
    with pytest.raises(DataError, match=r"class folder 'dog' is not one of the classes \(cat\)"):
        load_split(channel, ("cat",))


def test_imagefolder_with_one_folder_is_not_a_classifier(tmp_path: Path) -> None:
    """A demo-format channel that lost its manifest.csv must not train a one-class model on images/."""
    channel = _folder(tmp_path / "c", {"images/00000.png": "L"})
    with pytest.raises(DataError, match=r"one sub-folder \('images'\) and no manifest\.csv"):
        discover_classes(channel)


@pytest.mark.parametrize(
    ("name", "fmt", "damage"),
    [
        ("b.png", "PNG", lambda data: data[: len(data) // 2]),
        ("b.jpg", "JPEG", lambda data: data[: len(data) // 2]),
        ("b.png", "PNG", lambda data: b"garbage" * 20),
    ],
)
def test_imagefolder_corrupt_image_is_named(tmp_path: Path, name: str, fmt: str, damage) -> None:
    channel = _folder(tmp_path / "c", {"cat/a.png": "L", "dog/z.png": "L"})
    victim = channel / "dog" / name
    _image(victim, size=(64, 64), fmt=fmt)
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(DataError, match=rf"sample {victim} is not a readable image"):
        load_split(channel, ("cat", "dog"))
    split = load_split(channel, ("cat", "dog"), skip_bad_samples=True)
    assert split.skipped == (f"dog/{name}",)
    assert split.targets.tolist() == [0, 1]


def test_imagefolder_size_mismatch_fails_even_when_skipping(tmp_path: Path) -> None:
    channel = _folder(tmp_path / "c", {"cat/a.png": "L"})
    _image(channel / "dog" / "b.png", size=(9, 9))
    with pytest.raises(DataError, match=r"b\.png has shape \(1, 9, 9\), but the channel's first image has"):
        load_split(channel, ("cat", "dog"), skip_bad_samples=True)


def test_all_bad_channel_still_fails(tmp_path: Path) -> None:
    channel = tmp_path / "c"
    for name in ("cat/a.png", "dog/b.png"):
        (channel / name).parent.mkdir(parents=True)
        (channel / name).write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"every sample in .* is unreadable \(2 skipped; the first: sample .*a\.png"):
        load_split(channel, ("cat", "dog"), skip_bad_samples=True)


# -------------------------------------------------------------------------------------------------- demo format


def test_demo_format_skips_unreadable_and_missing_samples(tmp_path: Path) -> None:
    channel = tmp_path / "c"
    for name in ("a.png", "b.png", "c.png"):
        _image(channel / name)
    (channel / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (channel / "manifest.csv").write_text("file,label\na.png,cat\nb.png,dog\ngone.png,dog\nc.png,dog\n")
    split = load_split(channel, ("cat", "dog"), skip_bad_samples=True)
    assert split.skipped == ("b.png", "gone.png")
    assert split.targets.tolist() == [0, 1]
    with pytest.raises(DataError, match=r"b\.png is not a readable image"):
        load_split(channel, ("cat", "dog"))


def test_demo_format_label_errors_are_never_skipped(tmp_path: Path) -> None:
    channel = tmp_path / "c"
    _image(channel / "a.png")
    (channel / "manifest.csv").write_text("file,label\na.png,cow\n")
    with pytest.raises(DataError, match=r"has label 'cow', which is not one of the classes"):
        load_split(channel, ("cat",), skip_bad_samples=True)


# ---------------------------------------------------------------------------------------------------------- npz


def test_npz_uint8_nhw_loads_exact_pixels_in_file_order(tmp_path: Path) -> None:
    x0, y0 = _digits(5)
    x1, y1 = _digits(4)
    channel = _npz(tmp_path / "c" / "part-0.npz", x=x0, y=y0).parent
    np.savez_compressed(channel / "part-1.npz", x=x1, y=y1)
    classes = discover_classes(channel)
    split = load_split(channel, classes)
    assert classes == ("0", "1", "2")
    assert split.images.shape == (9, 1, 8, 8)
    assert str(split.images.dtype) == "torch.float32"
    assert np.array_equal(split.images[:, 0].numpy(), np.concatenate([x0, x1]).astype(np.float32))
    assert split.targets.tolist() == np.concatenate([y0, y1]).tolist()


def test_npz_float_nchw_and_classes_txt(tmp_path: Path) -> None:
    x, y = _digits(6, labels=2, shape=(3, 4, 5), dtype=np.float64)
    channel = _npz(tmp_path / "c" / "data.npz", x=x, y=y.astype(np.uint8)).parent
    (channel / "classes.txt").write_text("cat\ndog\nbird\n")
    classes = discover_classes(channel)
    split = load_split(channel, classes)
    assert classes == ("cat", "dog", "bird")
    assert split.images.shape == (6, 3, 4, 5)
    assert np.array_equal(split.images.numpy(), x.astype(np.float32))


def test_npz_classes_count_up_to_the_largest_label(tmp_path: Path) -> None:
    channel = _npz(tmp_path / "c" / "a.npz", x=np.zeros((2, 2, 2)), y=np.array([0, 11])).parent
    assert discover_classes(channel) == tuple(str(i) for i in range(12))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated: the zip directory is at the end
        lambda data: b"\x00" * len(data),  # not a zip at all (would otherwise be taken for a pickle)
        lambda data: data.replace(b"\x93NUMPY", b"\x93NUMPZ"),  # a zip whose member is not an array
    ],
)
def test_npz_unreadable_file_is_named_and_skippable(tmp_path: Path, damage) -> None:
    channel = _npz(tmp_path / "c" / "a.npz", x=_digits(4)[0], y=_digits(4)[1]).parent
    victim = _npz(channel / "b.npz", x=_digits(64)[0], y=_digits(64)[1])
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(DataError, match=rf"{victim} is not a readable \.npz file"):
        load_split(channel, ("0", "1", "2"))
    split = load_split(channel, ("0", "1", "2"), skip_bad_samples=True)
    assert split.skipped == ("b.npz",)
    assert len(split) == 4
    assert discover_classes(channel, skip_bad_samples=True) == ("0", "1", "2")


def test_npz_without_y_names_the_missing_array(tmp_path: Path) -> None:
    channel = _npz(tmp_path / "c" / "a.npz", x=np.zeros((2, 4, 4)), labels=np.zeros(2, int)).parent
    with pytest.raises(DataError, match=r"a\.npz has no array 'y': .* it has x, labels"):
        load_split(channel, ("0",), skip_bad_samples=True)
    with pytest.raises(DataError, match=r"has no array 'y'"):
        discover_classes(channel)


class _Exploit:
    """Unpickling this creates a file: proof that the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("array", ["x", "y"])
def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path, array: str) -> None:
    marker = tmp_path / "unpickled"
    evil = np.array([_Exploit(marker), _Exploit(marker)], dtype=object)
    arrays = {"x": np.zeros((2, 4, 4)), "y": np.zeros(2, int), array: evil}
    channel = _npz(tmp_path / "c" / "a.npz", **arrays).parent
    with pytest.raises(DataError, match=rf"array '{array}' holds Python objects \(dtype=object\): refused"):
        load_split(channel, ("0",), skip_bad_samples=True)
    assert not marker.exists(), "the object array was unpickled"


def test_npz_that_is_a_pickle_is_refused(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "unpickled"
    channel = tmp_path / "c"
    channel.mkdir()
    (channel / "a.npz").write_bytes(pickle.dumps({"x": _Exploit(marker)}))
    with pytest.raises(DataError, match=r"a\.npz is not a readable \.npz file \(no zip header\)"):
        load_split(channel, ("0",))
    assert not marker.exists()


def test_npz_shape_problems(tmp_path: Path) -> None:
    lengths = _npz(tmp_path / "lengths" / "a.npz", x=np.zeros((3, 4, 4)), y=np.zeros(2, int)).parent
    with pytest.raises(DataError, match=r"x holds 3 samples but y has 2 labels"):
        load_split(lengths, ("0",), skip_bad_samples=True)
    sizes = _npz(tmp_path / "sizes" / "a.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2, int)).parent
    _npz(sizes / "b.npz", x=np.zeros((2, 5, 5)), y=np.zeros(2, int))
    with pytest.raises(DataError, match=r"b\.npz: x holds samples of shape \(1, 5, 5\), but .*a\.npz has \(1, 4, 4\)"):
        load_split(sizes, ("0",), skip_bad_samples=True)
    last = _npz(tmp_path / "last" / "a.npz", x=np.zeros((2, 28, 28, 3)), y=np.zeros(2, int)).parent
    with pytest.raises(DataError, match=r"looks channels-last \(N, H, W, C\)"):
        load_split(last, ("0",))
    flat = _npz(tmp_path / "flat" / "a.npz", x=np.zeros((2, 16)), y=np.zeros(2, int)).parent
    with pytest.raises(DataError, match=r"x has dtype float64 and shape \(2, 16\): expected"):
        load_split(flat, ("0",))
    text = _npz(tmp_path / "text" / "a.npz", x=np.array([["a"]] * 2), y=np.zeros(2, int)).parent
    with pytest.raises(DataError, match=r"x has dtype <U1"):
        load_split(text, ("0",))
    y2d = _npz(tmp_path / "y2d" / "a.npz", x=np.zeros((2, 4, 4)), y=np.zeros((2, 1), int)).parent
    with pytest.raises(DataError, match=r"y has dtype int64 and shape \(2, 1\): expected a 1-D integer array"):
        load_split(y2d, ("0",))


def test_npz_labels_out_of_range_name_file_and_index(tmp_path: Path) -> None:
    high = _npz(tmp_path / "high" / "a.npz", x=np.zeros((4, 2, 2)), y=np.array([0, 1, 3, 2])).parent
    with pytest.raises(DataError, match=r"a\.npz: sample 2 has label 3, which is not a class index 0\.\.2 \(3 cla"):
        load_split(high, ("0", "1", "2"), skip_bad_samples=True)
    low = _npz(tmp_path / "low" / "a.npz", x=np.zeros((3, 2, 2)), y=np.array([0, -1, 1])).parent
    with pytest.raises(DataError, match=r"a\.npz: sample 1 has label -1: class indices start at 0"):
        discover_classes(low)
    floats = _npz(tmp_path / "floats" / "a.npz", x=np.zeros((2, 2, 2)), y=np.array([0.0, 1.0])).parent
    with pytest.raises(DataError, match=r"y has dtype float64"):
        discover_classes(floats)


def test_npz_bad_pixel_rows_are_named_and_skippable(tmp_path: Path) -> None:
    x = np.full((5, 2, 2), 7.0, dtype=np.float32)
    x[1, 0, 0] = np.nan
    x[3, 1, 1] = 300.0
    channel = _npz(tmp_path / "c" / "a.npz", x=x, y=np.arange(5) % 2).parent
    with pytest.raises(DataError, match=r"a\.npz: sample 1 has pixel values outside 0\.\.255"):
        load_split(channel, ("0", "1"))
    split = load_split(channel, ("0", "1"), skip_bad_samples=True)
    assert split.skipped == ("a.npz[1]", "a.npz[3]")
    assert split.targets.tolist() == [0, 0, 0]
    assert bool((split.images == 7.0).all())


def test_npz_empty_channel(tmp_path: Path) -> None:
    channel = _npz(tmp_path / "c" / "a.npz", x=np.zeros((0, 2, 2)), y=np.zeros(0, int)).parent
    with pytest.raises(DataError, match=r"hold no samples: the channel is empty"):
        discover_classes(channel)
    with pytest.raises(DataError, match=r"hold no samples: the channel is empty"):
        load_split(channel, ("0",))


# ------------------------------------------------------------------------------------------------ load_channels


def _env(base: Path, monkeypatch: pytest.MonkeyPatch) -> SageMakerEnv:
    for name in ("TRAIN", "VALIDATION", "TEST"):
        monkeypatch.delenv(f"SM_CHANNEL_{name}", raising=False)
    return SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(base)})


def test_load_channels_mixes_formats_and_reports_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "input" / "data"
    x, y = _digits(6)
    _npz(data / "train" / "a.npz", x=x, y=y)
    bad = _npz(data / "train" / "b.npz", x=x, y=y)
    bad.write_bytes(bad.read_bytes()[:40])
    _folder(data / "validation", {"0/a.png": "L", "1/b.png": "L", "2/c.png": "L"})
    lines: list[str] = []
    train, val, test = load_channels(_env(tmp_path, monkeypatch), skip_bad_samples=True, say=lines.append)
    assert (len(train), len(val), test) == (6, 3, None)
    assert train.classes == val.classes == ("0", "1", "2")
    assert lines == ["skipped_samples=1 channel=train: b.npz"]


def test_load_channels_needs_one_shape_and_a_validation_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "input" / "data"
    _folder(data / "train", {"cat/a.png": "L", "dog/b.png": "L"})
    env = _env(tmp_path, monkeypatch)
    with pytest.raises(DataError, match=r"input channel 'validation' not found at .*: pass a 'validation' channel"):
        load_channels(env, skip_bad_samples=False)
    _folder(data / "validation", {"cat/a.png": "L"})
    _folder(data / "test", {"cat/a.png": "L"}, size=(9, 9))
    with pytest.raises(DataError, match=r"channel 'test' has images of shape \(1, 9, 9\), but 'train' has \(1, 8, 8\)"):
        load_channels(env, skip_bad_samples=False)


def test_load_channels_names_many_skips_briefly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "input" / "data"
    x = np.full((14, 2, 2), 1.0)
    x[:12] = -1.0
    _npz(data / "train" / "a.npz", x=x, y=np.arange(14) % 2)
    _npz(data / "validation" / "a.npz", x=np.ones((2, 2, 2)), y=np.array([0, 1]))
    lines: list[str] = []
    train, _, _ = load_channels(_env(tmp_path, monkeypatch), skip_bad_samples=True, say=lines.append)
    assert len(train) == 2
    assert lines == ["skipped_samples=12 channel=train: " + ", ".join(f"a.npz[{i}]" for i in range(10)) + " and 2 more"]
