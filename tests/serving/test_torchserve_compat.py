"""TorchServe archives served unchanged: ``.mar`` files made by the real ``torch-model-archiver``, run by our server.

The module fixture ``archives`` builds, each with ``torch-model-archiver ... --export-path <tmp> --force``:

- ``custom.mar``: torchserve_handlers/custom_handler.py, a module-level ``handle(data, context)``, and a
  TorchScript model; version 2.0. Its answers report the context it saw (system properties, manifest,
  model name, headers, the body's type, the batch's length);
- ``eager.mar``: torchserve_handlers/eager_handler.py, a subclass of TorchServe's own ``BaseHandler`` (the
  ``ts`` package) with an eager ``model.py`` and a state dict; it fails on request for the error tests;
- ``image.mar``: the built-in handler name ``image_classifier``, a small TorchScript conv net on 3x224x224
  and ``index_to_name.json``;
- ``tensor.mar``: the built-in ``tensor`` handler (ours; TorchServe has no such built-in). torch-model-archiver
  0.12 passes only its own built-in names through (``--handler tensor`` makes it look for ``tensor.py``), so
  this one is archived with ``--handler base_handler`` and its manifest's handler then set to ``tensor``;
- ``withreqs.mar``: the same plus ``--requirements-file``: reported in the log, never installed.

Every archive carries a ``model-config.yaml`` with ``batchSize: 8`` and ``maxBatchDelay: 50``; TorchServe reads
it, our server does not: the same settings are its flags ``--max-batch-size 8 --max-batch-delay-ms 50``.
One server process serves the whole store for the module. References are computed in-process from the same
weights. The image reference is written here from torchvision's definitions of Resize(256), CenterCrop(224),
ToTensor and Normalize (torchvision itself cannot be installed next to the CPU torch), and is checked on its
own against known pixel values and against torch's antialiased bilinear resize (torchvision's tensor path).

``test_same_outputs_as_torchserve`` (marked ``torchserve`` and ``slow``) sends the same requests to real
TorchServe 0.12 (Java) and to our server and compares the answers; it skips, saying why, without Java or
TorchServe. The zip-slip tests need neither.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.serve_support.torchserve_config import write_config
from serving.artifact import ArtifactError
from serving.torchserve import safe_extract_zip
from tests.conftest import Server, free_port, http_request, processes_mentioning

# TorchScript is deprecated in torch 2.13, and it is what TorchServe archives and SageMaker model.pt files hold.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.:DeprecationWarning")
HANDLERS = Path(__file__).parent / "torchserve_handlers"
HAS_TS = importlib.util.find_spec("ts") is not None
BATCH_FLAGS = ("--max-batch-size", "8", "--max-batch-delay-ms", "50")
MODEL_CONFIG = "batchSize: 8\nmaxBatchDelay: 50\nminWorkers: 1\nmaxWorkers: 1\nresponseTimeout: 120\n"
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
NOT_INSTALLED = "deepcloud-never-installed-package"


def _venv_script(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


# ------------------------------------------------------------------------------------------- models and archives


class TinyImageNet(nn.Module):
    """3x224x224 in, 10 logits out: a strided conv, a pool and a linear layer (traced to TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=8, stride=8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(6 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1)) * 4


@dataclass
class Archives:
    store: Path
    work: Path
    custom: Any
    """The custom handler's TorchScript model (4 in, 3 out, tanh)."""
    eager: nn.Module | None
    """The BaseHandler archive's TinyNet with its weights; None without the ts package."""
    image: Any
    tensor: Any


def run_archiver(export: Path, name: str, *args: str, version: str = "1.0") -> subprocess.CompletedProcess:
    # The archiver stages files in $TMPDIR/<model name> and deletes that first: a private TMPDIR keeps
    # concurrent runs elsewhere on the machine out of it.
    scratch = export.parent / "archiver-tmp"
    scratch.mkdir(exist_ok=True)
    command = [
        _venv_script("torch-model-archiver"),
        "--model-name",
        name,
        "--version",
        version,
        *args,
        "--export-path",
        str(export),
        "--force",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "TMPDIR": str(scratch)}
    )


def archive(export: Path, name: str, *args: str, version: str = "1.0") -> Path:
    """One real ``torch-model-archiver`` run; the .mar lands in ``export``."""
    done = run_archiver(export, name, *args, version=version)
    assert done.returncode == 0, f"torch-model-archiver {name} {args} failed:\n{done.stdout}\n{done.stderr}"
    return export / f"{name}.mar"


def set_handler(mar: Path, handler: str) -> None:
    """Rewrite the archive's MAR-INF/MANIFEST.json with another handler name, every other member kept."""
    with zipfile.ZipFile(mar) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(mar, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            if info.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["handler"] = handler
                data = json.dumps(manifest, indent=2).encode()
            zf.writestr(info, data)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    if _venv_script("torch-model-archiver") is None:
        pytest.skip(
            "torch-model-archiver is not installed: pip install torch-model-archiver==0.12.0 (requirements/bench.txt)"
        )
    base = tmp_path_factory.mktemp("torchserve")
    work, store = base / "work", base / "store"
    work.mkdir()
    store.mkdir()
    torch.manual_seed(0)
    custom = torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval())
    custom.save(work / "linear.pt")
    image = torch.jit.trace(TinyImageNet().eval(), torch.zeros(1, 3, 224, 224))
    image.save(work / "image.pt")
    tensor = torch.jit.script(nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).eval())
    tensor.save(work / "tensor.pt")
    (work / "index_to_name.json").write_text(json.dumps(dict(enumerate(CLASS_NAMES))))
    (work / "requirements.txt").write_text(f"{NOT_INSTALLED}==9.9.9\n")
    (work / "model-config.yaml").write_text(MODEL_CONFIG)
    config = ("--config-file", str(work / "model-config.yaml"))

    archive(
        store,
        "custom",
        "--serialized-file",
        str(work / "linear.pt"),
        "--handler",
        str(HANDLERS / "custom_handler.py"),
        *config,
        version="2.0",
    )
    eager = None
    if HAS_TS:
        spec = importlib.util.spec_from_file_location("deepcloud_test_tinynet", HANDLERS / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        eager = module.TinyNet().eval()
        torch.save(eager.state_dict(), work / "weights.pt")
        archive(
            store,
            "eager",
            "--model-file",
            str(HANDLERS / "model.py"),
            "--serialized-file",
            str(work / "weights.pt"),
            "--handler",
            str(HANDLERS / "eager_handler.py"),
            *config,
        )
    archive(
        store,
        "image",
        "--serialized-file",
        str(work / "image.pt"),
        "--handler",
        "image_classifier",
        "--extra-files",
        str(work / "index_to_name.json"),
        *config,
    )
    set_handler(
        archive(store, "tensor", "--serialized-file", str(work / "tensor.pt"), "--handler", "base_handler", *config),
        "tensor",
    )
    set_handler(
        archive(
            store,
            "withreqs",
            "--serialized-file",
            str(work / "tensor.pt"),
            "--handler",
            "base_handler",
            "--requirements-file",
            str(work / "requirements.txt"),
            *config,
        ),
        "tensor",
    )
    return Archives(store, work, custom, eager, image, tensor)


@pytest.fixture(scope="module")
def ours(archives: Archives) -> Iterator[Server]:
    """Our server on the whole store, batching as the archives' model-config.yaml asks TorchServe to."""
    scratch = archives.store.parent / "server-tmp"
    scratch.mkdir()
    server = Server(
        archives.store, args=("--model-store", str(archives.store), *BATCH_FLAGS), env={"TMPDIR": str(scratch)}
    )
    try:
        server.wait_ready(timeout=120)
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------- helpers


def post(
    server: Any,
    path: str,
    body: bytes | str | object,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, body) with a JSON body parsed; ``body`` not bytes/str is sent as JSON."""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    status, answer_headers, raw = server.request(
        method, path, bytes(body), {"Content-Type": content_type, **(headers or {})}
    )
    with contextlib.suppress(ValueError):
        return status, answer_headers, json.loads(raw)
    return status, answer_headers, raw


def assert_close(actual: Any, expected: Any, path: str = "$") -> None:
    """Equal JSON values, floats within 1e-5 relative (1e-6 absolute)."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)), f"{path}: {actual!r} is not a number"
        assert isinstance(expected, (int, float)), f"{path}: expected {expected!r}, a number"
        assert math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-6), f"{path}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} != {expected!r}"
        assert actual.keys() == expected.keys(), f"{path}: {actual!r} != {expected!r}"
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {actual!r} != {expected!r}"
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def run_custom(archives: Archives, x: list[float]) -> list[float]:
    with torch.inference_mode():
        return archives.custom(torch.tensor([x]))[0].tolist()


def run_eager(archives: Archives, inputs: list[float]) -> dict[str, Any]:
    with torch.inference_mode():
        probabilities = torch.softmax(archives.eager(torch.tensor([inputs])), dim=1)[0]
    return {"probabilities": probabilities.tolist(), "class": int(probabilities.argmax())}


def torchvision_reference(image: Image.Image) -> np.ndarray:
    """Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet) as torchvision defines them on a PIL image.

    Resize: the shorter side becomes 256, the longer ``int(256 * long / short)``, PIL bilinear.
    CenterCrop: top/left ``int(round((size - 224) / 2.0))``. ToTensor: CHW float in [0, 1].
    """
    image = image.convert("RGB")
    width, height = image.size
    short, long = sorted((width, height))
    new_short, new_long = 256, int(256 * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    pixels = np.asarray(image.resize((new_width, new_height), Image.Resampling.BILINEAR), dtype=np.float32)
    top, left = round((new_height - 224) / 2.0), round((new_width - 224) / 2.0)
    crop = pixels[top : top + 224, left : left + 224] / 255.0
    return ((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def classify(archives: Archives, chw: np.ndarray) -> dict[str, float]:
    """TorchServe's ImageClassifier.postprocess: softmax, top 5, named through index_to_name.json."""
    with torch.inference_mode():
        probabilities = torch.softmax(archives.image(torch.from_numpy(chw)[None]), dim=1)
    top, classes = torch.topk(probabilities, 5, dim=1)
    return {CLASS_NAMES[c]: p for c, p in zip(classes[0].tolist(), top[0].tolist(), strict=True)}


def test_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients plus noise: enough structure that resizing and cropping change the answer."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) % 97 * 2.5], axis=-1)
    pixels += rng.normal(0, 20, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


test_image.__test__ = False  # a helper, not a test


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ the archives


def test_the_archiver_s_manifests_are_read_and_named_as_torchserve_names_them(archives: Archives) -> None:
    from serving.store import plan

    refs = {r.name: r for r in plan(archives.store / "unused", archives.store, None)}
    expected = {"custom": "2.0", "image": "1.0", "tensor": "1.0", "withreqs": "1.0"} | (
        {"eager": "1.0"} if HAS_TS else {}
    )
    assert {name: ref.version for name, ref in refs.items()} == expected
    with zipfile.ZipFile(archives.store / "withreqs.mar") as zf:
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))["model"]
    assert manifest["handler"] == "tensor"
    assert manifest["requirementsFile"] == "requirements.txt"
    assert manifest["configFile"] == "model-config.yaml"


def test_the_archiver_passes_through_only_its_own_built_in_handler_names(archives: Archives, tmp_path: Path) -> None:
    """Why tensor.mar's manifest is rewritten: ``--handler tensor`` is taken for a file tensor.py."""
    (tmp_path / "export").mkdir()
    done = run_archiver(
        tmp_path / "export", "t", "--serialized-file", str(archives.work / "tensor.pt"), "--handler", "tensor"
    )
    assert done.returncode != 0
    assert "No such file or directory: 'tensor.py'" in done.stderr


@pytest.mark.slow
def test_a_module_level_handle_function_sees_torchserve_s_context(ours: Server, archives: Archives) -> None:
    x = [0.5, -1.0, 2.0, 0.25]
    for path in ("/predictions/custom", "/predictions/custom/2.0"):
        status, headers, body = post(ours, path, {"x": x, "tag": "t"}, headers={"x-test": "hello"})
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        assert headers["x-request-id"]
        assert_close(body["y"], run_custom(archives, x))
        assert body == {
            **body,
            "tag": "t",
            "body_type": "dict",
            "batch": 1,
            "model_name": "custom",
            "manifest_model_name": "custom",
            "manifest_version": "2.0",
            "manifest_handler": "custom_handler.py",
            "batch_size": 8,
            "gpu_id": None,
            "model_dir_holds_weights": True,
            "model_dir_holds_manifest": True,
            "initialized_with": ["batch_size", "gpu_id", "model_dir"],
            "header": "hello",
        }
    status, _, body = post(ours, "/predictions/custom/9.9", {"x": x})
    assert status == 404
    assert body["message"] == "model 'custom' has no version '9.9' (loaded: 2.0)"


@pytest.mark.slow
def test_bodies_reach_the_handler_as_torchserve_passes_them(ours: Server) -> None:
    """JSON parsed, text/* as str, anything else as bytearray: TorchServe's worker rules."""
    payload = bytes(range(256)) * 3
    cases = [
        (json.dumps({"tag": "j"}).encode(), "application/json", {"body_type": "dict", "tag": "j"}),
        (json.dumps([1, 2]).encode(), "application/json", {"body_type": "list", "body_length": None}),
        ("héllo".encode(), "text/plain", {"body_type": "str", "text": "héllo", "body_length": 5}),
        (payload, "application/octet-stream", {"body_type": "bytearray", "body_length": len(payload)}),
        (b"{not json", "application/json", {"body_type": "bytearray", "body_length": 9}),
    ]
    for raw, content_type, expected in cases:
        status, _, body = post(ours, "/predictions/custom", raw, content_type)
        assert status == 200, body
        assert body == {**body, **expected}, (content_type, raw[:20])


@pytest.mark.slow
def test_set_response_content_type_is_honoured(ours: Server, archives: Archives) -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    status, headers, body = post(ours, "/predictions/custom", {"x": x}, headers={"x-format": "csv"})
    assert status == 200
    assert headers["content-type"].split(";")[0] == "text/csv"
    assert body.decode() == ",".join(f"{v:.5f}" for v in run_custom(archives, x)) + "\n"


@pytest.mark.slow
def test_concurrent_requests_reach_the_handler_as_one_batch(ours: Server, archives: Archives) -> None:
    """--max-batch-size 8 --max-batch-delay-ms 50: len(data) > 1 in the handler, answers not mixed up."""

    def one(i: int) -> tuple[int, dict]:
        status, _, body = post(ours, "/predictions/custom", {"x": [i, -i, 0.5, 1], "tag": str(i)})
        return status, body

    for _ in range(3):  # a loaded machine may start the threads too far apart; three rounds are plenty
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
        for i, (status, body) in enumerate(results):
            assert status == 200, body
            assert body["tag"] == str(i)
            assert_close(body["y"], run_custom(archives, [i, -i, 0.5, 1]))
        batches = [body["batch"] for _, body in results]
        assert max(batches) <= 8
        if max(batches) > 1:
            return
    pytest.fail(f"16 concurrent requests never shared a batch: {batches}")


@pytest.mark.slow
def test_a_header_is_found_under_the_name_the_client_sent(ours: Server) -> None:
    status, _, body = post(ours, "/predictions/custom", {"tag": "h"}, headers={"X-Test": "hello"})
    assert status == 200
    assert body["header_capitalized"] == "hello"  # context.get_request_header(idx, "X-Test"), as on TorchServe


@pytest.mark.slow
def test_put_predictions_like_curl_dash_t(ours: Server) -> None:
    status, _, body = post(ours, "/predictions/custom", b"\x00\x01", "application/octet-stream", method="PUT")
    assert status == 200, body
    assert body["body_type"] == "bytearray"


# ---------------------------------------------------------------------------------- BaseHandler and its errors


needs_ts = pytest.mark.skipif(
    not HAS_TS,
    reason="the 'ts' package (pip install torchserve==0.12.0) provides BaseHandler; without it eager.mar is not built",
)


@needs_ts
@pytest.mark.slow
def test_a_base_handler_subclass_with_an_eager_model(ours: Server, archives: Archives) -> None:
    for inputs in ([1, 2, 3, 4], [0.1, -0.2, 0.3, -0.4], [-3, 0, 3, 9]):
        status, headers, body = post(ours, "/predictions/eager", {"inputs": inputs})
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        assert_close(body, run_eager(archives, [float(v) for v in inputs]))
    status, _, body = post(
        ours, "/predictions/eager", json.dumps({"inputs": [1, 2, 3, 4]}).encode(), "application/octet-stream"
    )  # bytes: this handler's own preprocess json.loads them
    assert status == 200, body
    assert_close(body, run_eager(archives, [1.0, 2.0, 3.0, 4.0]))


@needs_ts
@pytest.mark.slow
def test_a_preprocess_exception_is_a_400_with_its_message(ours: Server) -> None:
    status, headers, body = post(ours, "/predictions/eager", {"inputs": [1, 2, 3]})
    assert status == 400
    assert body["code"] == "invalid_input"
    assert body["message"] == "the handler could not read the request: ValueError: expected 4 inputs, got 3"
    assert body["request_id"] == headers["x-request-id"]


@needs_ts
@pytest.mark.slow
def test_an_inference_exception_is_a_500_with_a_request_id_and_serving_goes_on(
    ours: Server, archives: Archives
) -> None:
    status, headers, body = post(
        ours,
        "/predictions/eager",
        {"inputs": [1, 2, 3, 4]},
        headers={"x-fail": "inference", "X-Request-Id": "req-boom-1"},
    )
    assert status == 500
    assert body == {
        "code": "internal_error",
        "request_id": "req-boom-1",
        "message": "inference failed; see the server log for request req-boom-1",
    }
    assert headers["x-request-id"] == "req-boom-1"
    assert "request_id=req-boom-1" in ours.output()
    assert "RuntimeError: boom in inference" in ours.output()
    status, _, body = post(ours, "/predictions/eager", {"inputs": [1, 2, 3, 4]})
    assert status == 200
    assert_close(body, run_eager(archives, [1.0, 2.0, 3.0, 4.0]))
    assert ours.request("GET", "/ping")[0] == 200


@needs_ts
@pytest.mark.slow
def test_a_prediction_exception_keeps_its_status(ours: Server) -> None:
    status, _, body = post(ours, "/predictions/eager", {"inputs": [1, 2, 3, 4]}, headers={"x-fail": "teapot"})
    assert status == 418
    assert body == {"code": "prediction_error", "message": "I am a teapot"}


# --------------------------------------------------------------------------------------- the built-in handlers


def test_the_image_reference_is_torchvision_s_pipeline() -> None:
    """Checks the reference on its own, so the server is not compared with a copy of itself."""
    # A solid colour survives resizing and cropping unchanged: every value is (c / 255 - mean) / std.
    solid = torchvision_reference(Image.new("RGB", (300, 500), (200, 100, 50)))
    assert solid.shape == (3, 224, 224)
    expected = (np.array([200, 100, 50], dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(solid, np.broadcast_to(expected[:, None, None], solid.shape), atol=1e-6)
    # A 256-wide image is not resized, only cropped: a column ramp shows where the crop starts.
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (300, 1, 3))
    cropped = torchvision_reference(Image.fromarray(ramp, "RGB"))
    left = round((256 - 224) / 2.0)  # 16
    np.testing.assert_allclose(cropped[0, 0, :3], ((np.arange(left, left + 3) / 255 - 0.485) / 0.229), atol=1e-6)
    np.testing.assert_allclose(cropped[2, 100, 223], ((left + 223) / 255 - 0.406) / 0.225, atol=1e-6)
    # Landscape 320x240 becomes 341x256 (int(256 * 320 / 240)); torchvision's tensor path (antialiased
    # bilinear interpolation, no uint8 rounding) agrees within about one grey level.
    image = test_image(320, 240, seed=1)
    chw = torchvision_reference(image)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255
    resized = torch.nn.functional.interpolate(
        pixels, size=(256, 341), mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = round((256 - 224) / 2.0), round((341 - 224) / 2.0)
    tensor_path = (
        (resized[:, top : top + 224, left : left + 224] - torch.tensor(IMAGENET_MEAN)[:, None, None])
        / torch.tensor(IMAGENET_STD)[:, None, None]
    ).numpy()
    assert np.abs(chw - tensor_path).max() < 1.5 / 255 / 0.224
    # And the server's own transform is this pipeline.
    from serving.handlers import ImageClassifier

    np.testing.assert_allclose(ImageClassifier._transform(image), chw, atol=1e-6)


@pytest.mark.slow
def test_the_built_in_image_classifier_matches_the_reference(ours: Server, archives: Archives) -> None:
    for width, height, fmt in ((320, 240, "PNG"), (200, 300, "JPEG"), (224, 224, "PNG"), (641, 480, "JPEG")):
        data = encode(test_image(width, height, seed=width), fmt)
        with Image.open(io.BytesIO(data)) as decoded:
            expected = classify(archives, torchvision_reference(decoded))
        status, _, body = post(ours, "/predictions/image", data, f"image/{fmt.lower()}")
        assert status == 200, body
        assert_close(body, expected)
        assert list(body) == list(expected), "classes in descending probability, as torch.topk orders them"
    # A nested list (already preprocessed) is taken as the tensor, as TorchServe's VisionHandler does.
    chw = torchvision_reference(test_image(320, 240, seed=320))
    status, _, body = post(ours, "/predictions/image", chw.tolist())
    assert status == 200, body
    assert_close(body, classify(archives, chw))
    status, _, body = post(ours, "/predictions/image", b"not an image", "image/png")
    assert status == 400
    assert body["message"].startswith("the handler could not read the request: UnidentifiedImageError")


@pytest.mark.slow
def test_the_image_classifier_takes_base64_text_like_torchserve_s(ours: Server, archives: Archives) -> None:
    data = encode(test_image(320, 240, seed=7), "PNG")
    status, _, body = post(ours, "/predictions/image", base64.b64encode(data), "text/plain")
    assert status == 200, body
    with Image.open(io.BytesIO(data)) as decoded:
        assert_close(body, classify(archives, torchvision_reference(decoded)))


@pytest.mark.slow
def test_the_built_in_tensor_handler(ours: Server, archives: Archives) -> None:
    def expected(rows: np.ndarray) -> list:
        with torch.inference_mode():
            return archives.tensor(torch.from_numpy(rows.astype(np.float32))).tolist()

    one = np.array([0.5, -1.0, 2.0])
    two = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    buffer = io.BytesIO()
    np.save(buffer, two.astype(np.float64))
    cases = [
        (one.tolist(), "application/json", expected(one)),
        ({"instances": two.tolist()}, "application/json", expected(two)),
        (buffer.getvalue(), "application/x-npy", expected(two)),
    ]
    for body_in, content_type, result in cases:
        status, _, body = post(ours, "/predictions/tensor", body_in, content_type)
        assert status == 200, body
        assert_close(body, result)

    def concurrent(i: int) -> tuple[int, Any]:
        return post(ours, "/predictions/tensor", [i, i / 2, -i])[::2]

    with ThreadPoolExecutor(8) as pool:
        for i, (status, body) in enumerate(pool.map(concurrent, range(8))):
            assert status == 200, body
            assert_close(body, expected(np.array([i, i / 2, -i])))
    for bad, content_type, message in (
        ([], "application/json", "input must be a non-empty numeric array"),
        (["a"], "application/json", "ValueError: could not convert string to float"),
        (b"\x93NUMPY broken", "application/x-npy", "neither JSON nor a readable .npy"),
    ):
        status, _, body = post(ours, "/predictions/tensor", bad, content_type)
        assert status == 400, body
        assert message in body["message"]


@pytest.mark.slow
def test_requirements_are_reported_and_never_installed(ours: Server) -> None:
    status, _, body = post(ours, "/predictions/withreqs", [1, 2, 3])
    assert status == 200, body
    assert (
        "model withreqs: withreqs.mar lists requirements (requirements.txt); they are not installed at run "
        "time: bake them into the image"
    ) in ours.output()
    assert importlib.util.find_spec(NOT_INSTALLED.replace("-", "_")) is None
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "show", NOT_INSTALLED], capture_output=True, text=True, timeout=60, check=False
    )
    assert pip.returncode != 0, pip.stdout


# --------------------------------------------------------------------------------------------------- zip-slip


def evil_mar(path: Path, member: zipfile.ZipInfo, data: bytes = b"open('/tmp/pwned', 'w')\n") -> Path:
    """A .mar with a valid manifest whose handler is ``member``: a path leaving the archive, or a link."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "MAR-INF/MANIFEST.json",
            json.dumps(
                {"runtime": "python", "model": {"modelName": "evil", "handler": "handler.py", "modelVersion": "1.0"}}
            ),
        )
        zf.writestr(member, data)
    return path


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the high 16 bits of external_attr are st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def evil_members(outside: Path) -> dict[str, tuple[zipfile.ZipInfo, str]]:
    """name -> (member, what the error says), with ``outside`` a directory the archive tries to write into."""
    return {
        "dotdot": (zipfile.ZipInfo("../evil.py"), "escapes the archive"),
        "absolute": (zipfile.ZipInfo(f"{outside}/evil.py"), "escapes the archive"),
        "symlink": (_symlink_member("handler.py"), "is a link or device"),
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "backslash", "drive"])
def test_zip_slip_members_are_refused_before_anything_is_extracted(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = {
        **evil_members(outside),
        "backslash": (zipfile.ZipInfo("..\\evil.py"), "escapes the archive"),
        "drive": (zipfile.ZipInfo("C:/evil.py"), "escapes the archive"),
    }
    member, message = members[case]
    mar = evil_mar(tmp_path / "evil.mar", member, b"/etc/passwd" if case == "symlink" else b"x = 1\n")
    dest = tmp_path / "dest" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(ArtifactError, match=f"member .* {message}; refusing it"):
        safe_extract_zip(mar, dest)
    assert list(dest.iterdir()) == []
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["evil.mar"]


@pytest.mark.slow
def test_a_zip_slip_mar_stops_the_server_with_one_line(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    servers = {}
    for case, (member, message) in evil_members(outside).items():
        store = tmp_path / case / "store"
        store.mkdir(parents=True)
        (tmp_path / case / "tmp").mkdir()
        mar = evil_mar(store / "evil.mar", member)
        server = Server(store, args=("--model-store", str(store)), env={"TMPDIR": str(tmp_path / case / "tmp")})
        servers[case] = (server, mar, message)
    try:
        for case, (server, mar, message) in servers.items():
            assert server.wait_exit(timeout=120) == 1, server.output()
            output = server.output()
            errors = [line for line in output.splitlines() if line.startswith("error:")]
            assert errors == [output.strip().splitlines()[-1]], output
            assert errors[0].startswith(f"error: {mar}: member ")
            assert errors[0].endswith(f"{message}; refusing it")
            assert "Traceback" not in output
            # The extraction directory, if the server left it, is inside its TMPDIR and empty.
            for leftover in (tmp_path / case / "tmp").iterdir():
                assert leftover.name.startswith("deepcloud-mar-"), leftover
                assert list(leftover.iterdir()) == [], case
    finally:
        for server, _, _ in servers.values():
            server.stop()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if not p.endswith(("evil.mar", ".log"))] == []
    assert not (tmp_path.parent / "evil.py").exists()


# ------------------------------------------------------------------------------------------ real TorchServe


@dataclass
class TorchServe:
    home: Path
    proc: subprocess.Popen
    port: int
    management_port: int
    env: dict[str, str]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, method, path, body, headers, timeout=60)

    def model_ready(self, name: str) -> bool:
        try:
            status, _, raw = http_request(self.management_port, "GET", f"/models/{name}", timeout=10)
            info = json.loads(raw) if status == 200 else []
        except (OSError, ValueError):
            return False
        return bool(info) and any(w.get("status") == "READY" for w in info[0].get("workers", []))

    def log(self) -> str:
        logs = [self.home / "torchserve.out", *sorted((self.home / "logs").glob("*.log"))]
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in logs if p.is_file())


def start_torchserve(home: Path, store: Path, models: list[str]) -> TorchServe:
    """``torchserve --start --ncs --disable-token-auth``, every API on 127.0.0.1, in its own session."""
    tmp, logs = home / "tmp", home / "logs"
    for folder in (tmp, logs):
        folder.mkdir(parents=True)
    ports = tuple(free_port() for _ in range(5))
    inference, management = ports[0], ports[1]
    write_config(home / "config.properties", store, ports)
    # TEMP: TorchServe's -Djava.io.tmpdir (worker sockets, the pid file) in our own folder, not /tmp.
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)}
    command = [
        _venv_script("torchserve"),
        "--start",
        "--ncs",
        "--disable-token-auth",
        "--ts-config",
        str(home / "config.properties"),
        "--model-store",
        str(store),
        "--models",
        *(f"{name}={name}.mar" for name in models),
    ]
    with (home / "torchserve.out").open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return TorchServe(home, proc, inference, management, env)


def session_pids(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def stop_torchserve(server: TorchServe) -> None:
    """``torchserve --stop``, then SIGTERM and SIGKILL to whatever is left of its session."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [_venv_script("torchserve"), "--stop"],
            cwd=server.home,
            env=server.env,
            timeout=60,
            capture_output=True,
            check=False,
        )
    sid = server.proc.pid  # start_new_session: the CLI's pid is the session (and process group) id
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        deadline = time.monotonic() + grace
        while session_pids(sid) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=0.1)
        if not session_pids(sid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, sig)
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=10)


def comparable(status: int, headers: dict[str, str], body: Any) -> tuple[int, str, Any]:
    """What must agree: the status, the media type when the handler set one, the body."""
    content_type = headers.get("content-type", "").split(";")[0]
    return status, content_type if content_type.startswith("text/") else "", body


@pytest.mark.torchserve
@pytest.mark.slow
def test_same_outputs_as_torchserve(ours: Server, archives: Archives, tmp_path: Path) -> None:
    if _java() is None:
        pytest.skip("TorchServe needs Java 11+ (apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")
    if _venv_script("torchserve") is None or not HAS_TS:
        pytest.skip("TorchServe is not installed: pip install -r requirements/bench.txt")
    store = tmp_path / "store"
    store.mkdir()
    for name in ("custom", "eager"):
        shutil.copy2(archives.store / f"{name}.mar", store)
    torchserve = start_torchserve(tmp_path / "torchserve", store, ["custom", "eager"])
    try:
        deadline = time.monotonic() + 180
        while not (torchserve.model_ready("custom") and torchserve.model_ready("eager")):
            assert torchserve.proc.poll() in (None, 0), f"torchserve exited:\n{torchserve.log()}"
            assert time.monotonic() < deadline, f"TorchServe not ready in 180 s:\n{torchserve.log()}"
            time.sleep(0.5)

        json_type = "application/json"
        requests = [
            ("/predictions/custom", {"x": [0.5, -1.0, 2.0, 0.25], "tag": "a"}, json_type, {"x-test": "hello"}),
            ("/predictions/custom/2.0", {"x": [3, 1, -4, 1]}, json_type, {}),
            ("/predictions/custom", "héllo wörld", "text/plain", {}),
            ("/predictions/custom", bytes(range(256)), "application/octet-stream", {}),
            ("/predictions/custom", b"{broken json", json_type, {}),
            ("/predictions/custom", {"x": [1, 2, 3, 4]}, json_type, {"x-format": "csv"}),
            ("/predictions/eager", {"inputs": [1, 2, 3, 4]}, json_type, {}),
            ("/predictions/eager", {"inputs": [-0.5, 0.25, 8, -2]}, json_type, {}),
            ("/predictions/eager", json.dumps({"inputs": [0, 1, 0, 1]}).encode(), "application/octet-stream", {}),
        ]
        for path, body, content_type, headers in requests:
            theirs = comparable(*post(torchserve, path, body, content_type, headers))
            mine = comparable(*post(ours, path, body, content_type, headers))
            for answer in (theirs[2], mine[2]):  # the client sent "x-test": a lookup of "X-Test" is moot
                if isinstance(answer, dict):
                    answer.pop("header_capitalized", None)
            assert theirs[0] == 200, (path, theirs)
            assert mine[:2] == theirs[:2], (path, body, mine, theirs)
            assert_close(mine[2], theirs[2], path)

        # PredictionException's status is kept by both.
        theirs = post(torchserve, "/predictions/eager", {"inputs": [1, 2, 3, 4]}, headers={"x-fail": "teapot"})
        mine = post(ours, "/predictions/eager", {"inputs": [1, 2, 3, 4]}, headers={"x-fail": "teapot"})
        assert theirs[0] == mine[0] == 418
        assert theirs[2]["message"] == mine[2]["message"] == "I am a teapot"
        # The documented differences (docs/migrating-from-torchserve.md): TorchServe answers 503 "Prediction
        # failed" for any exception; ours says whose fault it was: preprocess 400, inference 500.
        failures = [({"inputs": [1, 2, 3]}, {}, 400), ({"inputs": [1, 2, 3, 4]}, {"x-fail": "inference"}, 500)]
        for body, headers, our_status in failures:
            theirs = post(torchserve, "/predictions/eager", body, headers=headers)
            assert (theirs[0], theirs[2]["message"]) == (503, "Prediction failed")
            assert post(ours, "/predictions/eager", body, headers=headers)[0] == our_status
        # TorchServe hands the handler the header names as the client wrote them, and takes PUT (curl -T).
        theirs = post(torchserve, "/predictions/custom", {"tag": "h"}, headers={"X-Test": "hello"})
        assert (theirs[2]["header"], theirs[2]["header_capitalized"]) == (None, "hello")
        theirs = post(torchserve, "/predictions/custom", b"\x00\x01", "application/octet-stream", method="PUT")
        assert (theirs[0], theirs[2]["body_type"]) == (200, "bytearray")
        # Batching settings: model-config.yaml's batchSize/maxBatchDelay there, --max-batch-size/-delay-ms here.
        assert post(torchserve, "/predictions/custom", {"tag": "b"})[2]["batch_size"] == 8
    finally:
        stop_torchserve(torchserve)
    assert session_pids(torchserve.proc.pid) == []
    assert processes_mentioning(str(torchserve.home)) == [], "a TorchServe process (java or worker) survived"
