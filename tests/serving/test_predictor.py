"""decode -> predict -> encode as plain functions: every malformed input gets a 400 that says what to send."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.artifact import Artifact, load_artifact
from serving.predictor import InvalidInput, decode_json, encode_response, predict


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
        (json.dumps([["a"] * 8] * 8).encode(), "rectangular array of numbers"),
        (b"[NaN]", "NaN is not a valid pixel value"),
        (b"[Infinity]", "Infinity is not a valid pixel value"),
        (b"[1e999]", "input holds NaN or Infinity"),
        (json.dumps([[-1] * 8] * 8).encode(), "pixel values must lie in [0, 255], got [-1, -1]"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 32 levels"),
        (b"[" * 100000 + b"]" * 100000, "nested deeper than 32 levels"),
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
