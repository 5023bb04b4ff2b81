"""decode -> predict -> encode as plain functions: every malformed input gets a 400 that says what to send."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serving.artifact import Artifact, load_artifact
from serving.codec import (
    JPEG,
    JSON,
    NPY,
    PNG,
    InvalidInput,
    NotAcceptable,
    UnsupportedMediaType,
    decode,
    decode_json,
    encode,
    encode_response,
    postprocess,
    request_types,
    response_type,
)
from serving.runner import predict


@pytest.fixture(scope="module")
def artifact(tiny_artifact_template: Path) -> Artifact:
    return load_artifact(tiny_artifact_template)


IMAGE = np.arange(64, dtype=np.float64).reshape(8, 8).tolist()


@pytest.mark.parametrize(
    ("payload", "shape"),
    [
        ({"instances": [IMAGE]}, (1, 1, 8, 8)),
        (IMAGE, (1, 1, 8, 8)),
        ([[IMAGE]], (1, 1, 8, 8)),
        ({"instances": [IMAGE, IMAGE, IMAGE]}, (3, 1, 8, 8)),
        ([[IMAGE], [IMAGE]], (2, 1, 8, 8)),
    ],
)
def test_accepted_shapes(artifact: Artifact, payload: object, shape: tuple[int, ...]) -> None:
    batch = decode_json(json.dumps(payload).encode(), artifact)
    assert batch.shape == shape
    assert batch.dtype == np.float32
    assert batch[0, 0, 1, 2] == 10.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"{not json", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b'{"inputs": []}', "must have an 'instances' field"),
        (b"[]", "input is empty"),
        (b'{"instances": []}', "input is empty"),
        (json.dumps([IMAGE[:7]]).encode(), "input has shape [1, 7, 8]: expected shape [1, 8, 8]"),
        (json.dumps([[[1, 2], [3]]]).encode(), "rectangular array of numbers"),
        (json.dumps([["a"] * 8] * 8).encode(), "input values must be numbers, not strings (got 'a')"),
        (b"[NaN]", "NaN is not a valid pixel value"),
        (b"[Infinity]", "Infinity is not a valid pixel value"),
        (b"[1e999]", "input holds NaN or Infinity"),
        (json.dumps([[-1] * 8] * 8).encode(), "input values must lie in [0, 255], got [-1, -1]"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 32 levels"),
        (b"[" * 100000 + b"]" * 100000, "nested deeper than 32 levels"),
        (b"[" + b"1" * 4301 + b"]", "input holds NaN or Infinity"),
        (json.dumps([[str(p) for p in row] for row in IMAGE]).encode(), "input values must be numbers, not strings"),
        (json.dumps([[True] * 8] * 8).encode(), "input values must be numbers, not true"),
        (json.dumps([[None] * 8] * 8).encode(), "input values must be numbers, not null"),
    ],
)
def test_bad_input_says_what_was_expected(artifact: Artifact, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json(body, artifact)
    assert message in str(info.value)


def test_batch_limit(artifact: Artifact) -> None:
    too_many = np.zeros((artifact.max_batch_size + 1, 1, 8, 8)).tolist()
    with pytest.raises(InvalidInput, match="larger than the model's limit of 4096"):
        decode_json(json.dumps(too_many).encode(), artifact)


def test_predict_and_encode_match_the_module(artifact: Artifact) -> None:
    batch = np.random.default_rng(0).uniform(0, 255, (5, 1, 8, 8)).astype(np.float32)
    logits = predict(artifact, batch)
    expected = artifact.module(torch.from_numpy(batch)).detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)
    response = encode_response(artifact, logits)
    assert [p["index"] for p in response["predictions"]] == expected.argmax(axis=1).tolist()
    for p in response["predictions"]:
        assert p["label"] == artifact.labels[p["index"]]
        assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _header(text: str) -> bytes:
    """An .npy version 1.0 file with exactly this header text and no data."""
    header = text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _image(size: tuple[int, int], fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0]), "L").convert(mode).save(
        buffer, format=fmt
    )
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_npy_requests(artifact: Artifact, dtype) -> None:
    one = np.arange(64).reshape(1, 8, 8).astype(dtype)
    assert decode(_npy(one), NPY, artifact).shape == (1, 1, 8, 8)
    batch = decode(_npy(np.stack([one, one])), NPY, artifact)
    assert batch.shape == (2, 1, 8, 8)
    assert batch.dtype == np.float32
    assert batch[1, 0, 1, 2] == 10.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"\x93NUMPY\x01\x00garbage", "not a readable .npy array"),
        (_npy(np.zeros((1, 8, 8)))[:-7], "not a readable .npy array"),
        (_npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "array dtype object is not numeric"),
        (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"), "more values than"),
        (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"), "more values than"),
        (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,), }"), "more values"),
        (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (True,), }"), "declares shape (True,)"),
        (_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), "), "not a readable .npy array"),
        (b"PK\x03\x04AAAA", "not a readable .npy array"),
        (_npy(np.zeros((1, 8, 8), dtype=np.complex64)), "dtype complex64 is not numeric"),
        (_npy(np.array(["x"] * 64).reshape(1, 8, 8)), "dtype <U1 is not numeric"),
        (_npy(np.zeros((2, 3))), "input has shape [2, 3]"),
        (_npy(np.full((1, 8, 8), np.nan)), "NaN or Infinity"),
        (_npy(np.full((1, 8, 8), 300.0)), "input values must lie in [0, 255]"),
    ],
)
def test_bad_npy_says_what_was_expected(artifact: Artifact, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(body, NPY, artifact)
    assert message in str(info.value)


def test_pickled_npy_is_never_unpickled(artifact: Artifact, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    body = _npy(np.array([Exploit()], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInput, match=r"array dtype object is not numeric"):
        decode(body, NPY, artifact)
    assert not marker.exists()


@pytest.mark.parametrize(("fmt", "media"), [("PNG", PNG), ("JPEG", JPEG)])
def test_image_requests(artifact: Artifact, fmt: str, media: str) -> None:
    batch = decode(_image((8, 8), fmt), media, artifact)
    assert batch.shape == (1, 1, 8, 8)
    if fmt == "PNG":  # lossless: exactly the pixels sent
        assert batch.ravel().tolist() == list(range(64))
    rgb = decode(_image((8, 8), fmt, "RGB"), media, artifact)  # converted to the model's colour mode
    assert rgb.shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    ("body", "media", "message"),
    [
        (_image((9, 8), "PNG"), PNG, "image is 9x8 pixels: expected 8x8"),
        (_image((8, 8), "JPEG"), PNG, "not a readable PNG image"),
        (_image((8, 8), "PNG")[:30], PNG, "not a readable PNG image"),
        (b"not an image", JPEG, "not a readable JPEG image"),
        (b"", PNG, "not a readable PNG image"),
    ],
)
def test_bad_images_say_what_was_expected(artifact: Artifact, body: bytes, media: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(body, media, artifact)
    assert message in str(info.value)


def test_decompression_bomb_is_refused_from_its_header(artifact: Artifact) -> None:
    # A 30000x30000 PNG header: refused on its declared size, without decoding ~900 MB of pixels.
    body = _image((8, 8), "PNG")
    bomb = body[:16] + (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big") + body[24:]
    with pytest.raises(InvalidInput, match=r"image is 30000x30000 pixels|not a readable PNG image"):
        decode(bomb, PNG, artifact)


def test_content_types_by_model_kind(artifact: Artifact) -> None:
    assert request_types(artifact) == (JSON, NPY, PNG, JPEG)
    tabular = dataclasses.replace(artifact, manifest={**artifact.manifest, "input": {"shape": [16]}})
    assert request_types(tabular) == (JSON, NPY)
    with pytest.raises(UnsupportedMediaType, match="send one of application/json, application/x-npy"):
        decode(b"\x89PNG", PNG, tabular)
    with pytest.raises(UnsupportedMediaType):
        decode(b"a,b", "text/csv", artifact)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/*", JSON),
        ("application/x-npy", NPY),
        ("text/html, application/x-npy;q=0.9", NPY),
        ("application/json;q=0, application/x-npy", NPY),
    ],
)
def test_accept_chooses_the_response_type(accept: str | None, expected: str) -> None:
    assert response_type(accept) == expected


@pytest.mark.parametrize("accept", ["text/html", "image/png", "application/json;q=0"])
def test_unwritable_accept_is_406(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="use application/json or application/x-npy"):
        response_type(accept)


def test_npy_response_holds_the_probabilities(artifact: Artifact) -> None:
    batch = np.random.default_rng(1).uniform(0, 255, (3, 1, 8, 8)).astype(np.float32)
    logits = predict(artifact, batch)
    probs = np.load(io.BytesIO(encode(artifact, postprocess(logits), NPY)), allow_pickle=False)
    assert probs.dtype == np.float32
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs.argmax(1).tolist() == logits.argmax(1).tolist()
    as_json = json.loads(encode(artifact, postprocess(logits), JSON))
    assert [p["index"] for p in as_json["predictions"]] == logits.argmax(1).tolist()


def test_a_batch_prediction_splits_into_the_predictions_of_its_requests(artifact: Artifact) -> None:
    batch = np.random.default_rng(2).uniform(0, 255, (5, 1, 8, 8)).astype(np.float32)
    whole = postprocess(predict(artifact, batch))
    parts = whole.split([2, 1, 2])
    assert [len(p.index) for p in parts] == [2, 1, 2]
    for part, rows in zip(parts, (slice(0, 2), slice(2, 3), slice(3, 5)), strict=True):
        alone = postprocess(predict(artifact, batch[rows]))
        assert json.loads(encode(artifact, part, JSON)) == json.loads(encode(artifact, alone, JSON))
        np.testing.assert_allclose(part.probs, alone.probs, rtol=1e-6, atol=1e-7)


# The simdjson path (codec._plain_array) must answer exactly as the general path for every body.
_ROW = [3, 0, 255, 17.5, 1e2, -0.0, 2e-3, 9]
_INSTANCE = [[_ROW] * 8]  # [1, 8, 8]
_SAME_AS_GENERAL = {
    "wrapped batch": json.dumps({"instances": [_INSTANCE, _INSTANCE]}),
    "wrapped, spaces and newlines": json.dumps({"instances": [_INSTANCE]}, indent=2),
    "bare batch": json.dumps([_INSTANCE] * 3),
    "one bare instance": json.dumps(_INSTANCE),
    "wrapped bare instance": json.dumps({"instances": _INSTANCE}),
    "no channel axis (general path only)": json.dumps([_ROW] * 8),
    "ragged": json.dumps([[_ROW] * 7 + [_ROW[:-1]]]),
    "ragged with the right count": json.dumps([[_ROW] * 6 + [[*_ROW, 1], _ROW[:-1]]]),  # 64 numbers
    "one level deeper": json.dumps([[[_ROW] * 8]]).replace("3,", "[3],", 1),
    "a string": json.dumps([[_ROW] * 8]).replace("17.5", '"17.5"', 1),
    "a bool": json.dumps([[_ROW] * 8]).replace("17.5", "true", 1),
    "a null": json.dumps([[_ROW] * 8]).replace("17.5", "null", 1),
    "NaN": json.dumps([[_ROW] * 8]).replace("17.5", "NaN", 1),
    "1e400": json.dumps([[_ROW] * 8]).replace("17.5", "1e400", 1),
    "a 70-digit integer": json.dumps([[_ROW] * 8]).replace("17.5", "9" * 70, 1),
    "out of range": json.dumps([[_ROW] * 8]).replace("17.5", "256", 1),
    "negative": json.dumps([[_ROW] * 8]).replace("17.5", "-1", 1),
    "another key": json.dumps({"instances": [_INSTANCE], "extra": 1}),
    "instances twice": '{"instances": [[[1]]], "instances": ' + json.dumps([_INSTANCE]) + "}",
    "escaped key": json.dumps({"instances": [_INSTANCE]}).replace("instances", "\\u0069nstances"),
    "missing comma": json.dumps([[_ROW] * 8]).replace("17.5, ", "17.5 ", 1),
    "trailing comma": json.dumps([[_ROW] * 8])[:-2] + ",]]",
    "empty": "[]",
    "a number": "5",
}


@pytest.mark.parametrize("body", _SAME_AS_GENERAL.values(), ids=_SAME_AS_GENERAL.keys())
def test_the_simdjson_path_answers_as_the_general_path(
    artifact: Artifact, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import codec

    def outcome() -> object:
        try:
            return decode_json(body.encode(), artifact)
        except InvalidInput as exc:
            return f"400: {exc}"

    fast = outcome()
    monkeypatch.setattr(codec, "simdjson", None)
    general = outcome()
    if isinstance(general, str):
        assert fast == general
    else:
        assert isinstance(fast, np.ndarray)
        assert fast.dtype == general.dtype
        np.testing.assert_array_equal(fast, general)


def test_the_simdjson_path_takes_the_common_bodies(artifact: Artifact) -> None:
    from serving.codec import _plain_array

    for name in (
        "wrapped batch",
        "wrapped, spaces and newlines",
        "bare batch",
        "one bare instance",
        "wrapped bare instance",
    ):
        assert _plain_array(_SAME_AS_GENERAL[name].encode(), artifact.input_shape) is not None, name
    for name in (
        "ragged",
        "ragged with the right count",
        "one level deeper",
        "a string",
        "another key",
        "instances twice",
        "missing comma",
        "no channel axis (general path only)",
    ):
        assert _plain_array(_SAME_AS_GENERAL[name].encode(), artifact.input_shape) is None, name
