"""The artifact contract, end to end: the trainer's real output, served by the real server over HTTP,
gives exactly the predictions of the same artifact evaluated in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.archive import pack_model

pytestmark = pytest.mark.slow


def _test_set(dataset: Path) -> tuple[np.ndarray, list[str]]:
    channel = dataset / "test"
    with (channel / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = np.stack([np.asarray(Image.open(channel / r["file"]), dtype=np.uint8) for r in rows])
    return images, [r["label"] for r in rows]


def test_http_predictions_equal_in_process_predictions(trained_model: Path, dataset: Path, start_server) -> None:
    images, labels = _test_set(dataset)
    manifest = json.loads((trained_model / "manifest.json").read_text())
    module = torch.export.load(trained_model / "model.pt2").module()
    with torch.no_grad():
        logits = module(torch.from_numpy(images[:, None].astype(np.float32))).numpy()
    in_process = [manifest["labels"][i] for i in logits.argmax(axis=1)]
    in_process_accuracy = np.mean([p == y for p, y in zip(in_process, labels, strict=True)])
    assert in_process_accuracy == pytest.approx(manifest["metrics"]["test"]["accuracy"], abs=0)
    assert in_process_accuracy >= 0.95

    server = start_server(trained_model)
    server.wait_ready()
    over_http = []
    for image in images:  # one request per image, as `make predict` sends them
        status, body = server.invoke({"instances": [image.tolist()]})
        assert status == 200, body
        over_http.append(body["predictions"][0])
    assert [p["label"] for p in over_http] == in_process
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose([p["probabilities"] for p in over_http], probabilities, atol=1e-5)

    status, body = server.invoke({"instances": images[:64].tolist()})  # one batched request
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == in_process[:64]


def test_packed_model_tar_gz_serves_the_same(trained_model: Path, dataset: Path, start_server, tmp_path: Path) -> None:
    archive = pack_model(trained_model, tmp_path / "model.tar.gz")
    images, _ = _test_set(dataset)
    module = torch.export.load(trained_model / "model.pt2").module()
    with torch.no_grad():
        expected = module(torch.from_numpy(images[:32, None].astype(np.float32))).argmax(dim=1).tolist()
    server = start_server(archive)
    server.wait_ready()
    status, body = server.invoke(images[:32].tolist())
    assert status == 200
    assert [p["index"] for p in body["predictions"]] == expected


def test_the_packer_puts_the_manifest_first_and_the_files_at_the_root(tmp_path: Path) -> None:
    """make deploy TARGET=aws reads the manifest from the stream (ops/aws/runs.py read_manifest, tarfile mode r|gz)."""
    import tarfile

    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    for name in ("a.txt", "model.pt2", "manifest.json", "code/x.py"):
        (model / name).write_text(name)
    archive = pack_model(model, tmp_path / "model.tar.gz")
    with tarfile.open(archive, "r|gz") as tar:
        names = [m.name for m in tar]
    assert names == ["manifest.json", "a.txt", "code", "code/x.py", "model.pt2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.tar.gz"], "a temporary file was left"
