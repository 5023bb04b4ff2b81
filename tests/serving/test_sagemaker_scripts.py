"""SageMaker PyTorch artifacts served unchanged: ``code/inference.py`` with model_fn and friends, over real HTTP.

One model store, one server process for the module (plus one more on ``SM_MODEL_DIR`` alone, as SageMaker
starts it), started together. The store holds each artifact shape SageMaker users have:

- ``full/``: a directory; inference.py defines model_fn, input_fn (with a content type of its own),
  predict_fn and output_fn (which returns ``(body, content_type)`` for text/plain); code/requirements.txt;
- ``defaults/model.tar.gz``: only model_fn: the toolkit's default input, predict and output functions;
- ``transform.tar.gz``: transform_fn, and no model_fn: the default loads TorchScript ``model.pt``;
- ``broken/``: a model_fn that raises.

The scripts are in tests/serving/sagemaker_scripts/. References are computed in-process from the same weights.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from serving.artifact import ArtifactError
from tests.conftest import Server

# TorchScript is deprecated in torch 2.13, and it is what TorchServe archives and SageMaker model.pt files hold.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.:DeprecationWarning")
SCRIPTS = Path(__file__).parent / "sagemaker_scripts"
NOT_INSTALLED = "deepcloud-never-installed-package"
NUMBERS = "application/x-numbers"
MODELS = "full=full,defaults=defaults,transform=transform.tar.gz,broken=broken"


class Net(nn.Module):
    """full/inference.py's Net (same parameter names, so its state dict loads there)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@dataclass
class Store:
    root: Path
    full: nn.Module
    defaults: nn.Module
    transform: Any


def _tar(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    base = tmp_path_factory.mktemp("sagemaker")
    root, staging = base / "store", base / "staging"
    root.mkdir()
    torch.manual_seed(0)

    full = Net().eval()
    shutil.copytree(SCRIPTS / "full", root / "full" / "code")
    torch.save(full.state_dict(), root / "full" / "model.pth")

    defaults = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).eval()
    shutil.copytree(SCRIPTS / "defaults", staging / "defaults" / "code")
    torch.save(defaults.state_dict(), staging / "defaults" / "model.pth")
    (root / "defaults").mkdir()
    _tar(staging / "defaults", root / "defaults" / "model.tar.gz")

    transform = torch.jit.script(nn.Linear(2, 3).eval())
    shutil.copytree(SCRIPTS / "transform", staging / "transform" / "code")
    transform.save(staging / "transform" / "model.pt")
    _tar(staging / "transform", root / "transform.tar.gz")

    shutil.copytree(SCRIPTS / "broken", root / "broken" / "code")
    return Store(root, full, defaults, transform)


@pytest.fixture(scope="module")
def servers(store: Store) -> Iterator[tuple[Server, Server]]:
    """(the store's server, a server on SM_MODEL_DIR=full alone), started side by side."""
    scratch = store.root.parent / "tmp"
    scratch.mkdir()
    single = store.root.parent / "single" / "model"
    shutil.copytree(store.root / "full", single)
    env = {"TMPDIR": str(scratch)}
    started = [
        Server(store.root, args=("--model-store", str(store.root), "--models", MODELS), env=env),
        Server(single, env=env),
    ]
    try:
        for server in started:
            server.wait_ready(timeout=120)
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


def post(
    server: Server, path: str, body: bytes | str, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body.encode() if isinstance(body, str) else body
    return server.request("POST", path, data, {"Content-Type": content_type, **(headers or {})})


def run_full(store: Store, values: list[float]) -> list[float]:
    with torch.no_grad():
        return (store.full(torch.tensor([values], dtype=torch.float32)) * 2.0)[0].tolist()


def run_defaults(store: Store, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return store.defaults(torch.from_numpy(rows.astype(np.float32))).numpy()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ all four functions


@pytest.mark.slow
def test_all_four_functions_with_a_content_type_of_the_script_s_own(server: Server, store: Store) -> None:
    values = [0.5, -1.0, 2.0, 4.0]
    expected = run_full(store, values)
    for path in ("/invocations", "/predictions/full"):  # full is the first model named: /invocations' default
        status, headers, body = post(server, path, " ".join(map(str, values)), NUMBERS)
        assert status == 200, body
        assert headers["content-type"] == "application/json", "output_fn's bare body takes the Accept's type"
        answer = json.loads(body)
        assert answer["accept"] == "application/json"
        np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5)
    status, headers, body = post(
        server, "/invocations", json.dumps({"inputs": values}), "application/json", {"Accept": "text/plain"}
    )
    assert status == 200, body
    assert headers["content-type"].split(";")[0] == "text/plain", "output_fn's (body, content_type) is kept"
    assert body.decode() == " ".join(f"{v:.5f}" for v in expected)
    # helper.py next to inference.py is importable, and full's helper is not transform's (VALUE 2, not 100).


@pytest.mark.slow
def test_an_input_fn_exception_is_a_400_with_its_message(server: Server) -> None:
    for body, content_type, message in [
        ("1 2 3", NUMBERS, "ValueError: expected 4 numbers, got 3"),
        ("1 2 x 4", NUMBERS, "ValueError: could not convert string to float: 'x'"),
        (
            "<a/>",
            "application/xml",
            "ValueError: this model reads application/x-numbers or application/json, not application/xml",
        ),
        ('{"in": [1]}', "application/json", "KeyError: 'inputs'"),
    ]:
        status, headers, raw = post(server, "/invocations", body, content_type)
        assert status == 400, raw
        error = json.loads(raw)
        assert error["code"] == "invalid_input"
        assert error["message"] == f"input_fn could not read the request: {message}"
        assert error["request_id"] == headers["x-request-id"]


@pytest.mark.slow
def test_a_predict_fn_exception_is_a_500_with_a_request_id_and_serving_goes_on(server: Server, store: Store) -> None:
    status, headers, raw = post(server, "/invocations", "999 1 2 3", NUMBERS, {"X-Amzn-RequestId": "sm-req-42"})
    assert status == 500
    assert json.loads(raw) == {
        "code": "internal_error",
        "request_id": "sm-req-42",
        "message": "inference failed; see the server log for request sm-req-42",
    }
    assert headers["x-request-id"] == "sm-req-42"
    assert "request_id=sm-req-42" in server.output()
    assert "RuntimeError: predict_fn exploded" in server.output()
    status, _, raw = post(server, "/invocations", "1 2 3 4", NUMBERS)
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw)["outputs"], run_full(store, [1, 2, 3, 4]), rtol=1e-5)


@pytest.mark.slow
def test_requirements_txt_is_reported_and_never_installed(server: Server) -> None:
    import importlib.util

    assert "code/requirements.txt lists requirements; they are not installed at run time" in server.output()
    assert importlib.util.find_spec(NOT_INSTALLED.replace("-", "_")) is None


# ------------------------------------------------------------------------------------------- only model_fn


@pytest.mark.slow
def test_only_model_fn_json_in_and_out(server: Server, store: Store) -> None:
    rows = np.array([[0.1, 0.2, 0.3], [-1.0, 0.0, 1.0]])
    for accept in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        status, headers, raw = post(
            server, "/predictions/defaults", json.dumps(rows.tolist()), "application/json", accept
        )
        assert status == 200, raw
        assert headers["content-type"] == "application/json"
        np.testing.assert_allclose(json.loads(raw), run_defaults(store, rows), rtol=1e-5)


@pytest.mark.slow
def test_only_model_fn_npy_in_and_out_by_accept(server: Server, store: Store) -> None:
    rows = np.random.default_rng(0).normal(size=(4, 3))
    status, headers, raw = post(
        server, "/predictions/defaults", npy(rows), "application/x-npy", {"Accept": "application/x-npy"}
    )
    assert status == 200, raw
    assert headers["content-type"] == "application/x-npy"
    answer = np.load(io.BytesIO(raw), allow_pickle=False)
    assert answer.shape == (4, 2)
    np.testing.assert_allclose(answer, run_defaults(store, rows), rtol=1e-5)
    # npy in, JSON out (no Accept); JSON in, npy out.
    status, _, raw = post(server, "/predictions/defaults", npy(rows.astype(np.int16)), "application/x-npy")
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw), run_defaults(store, rows.astype(np.int16)), rtol=1e-5)
    status, _, raw = post(
        server, "/predictions/defaults", json.dumps(rows.tolist()), "application/json", {"Accept": "application/x-npy"}
    )
    assert status == 200, raw
    np.testing.assert_allclose(np.load(io.BytesIO(raw)), run_defaults(store, rows), rtol=1e-5)


@pytest.mark.slow
def test_only_model_fn_csv_in_and_out(server: Server, store: Store) -> None:
    rows = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 0.25]])
    csv_body = "1,2,3\n0.5,-0.5,0.25\n"
    status, headers, raw = post(server, "/predictions/defaults", csv_body, "text/csv", {"Accept": "text/csv"})
    assert status == 200, raw
    assert headers["content-type"].split(";")[0] == "text/csv"
    parsed = np.array([[float(v) for v in line.split(",")] for line in raw.decode().splitlines()])
    np.testing.assert_allclose(parsed, run_defaults(store, rows), rtol=1e-5)
    status, _, raw = post(server, "/predictions/defaults", csv_body, "text/csv")
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw), run_defaults(store, rows), rtol=1e-5)


@pytest.mark.slow
def test_only_model_fn_refuses_what_the_defaults_cannot_read_or_write(server: Server) -> None:
    status, _, raw = post(server, "/predictions/defaults", b"\x89PNG...", "image/png")
    assert status == 415
    error = json.loads(raw)
    assert error["code"] == "unsupported_media_type"
    assert error["message"] == (
        "content type 'image/png' is not supported by the default input_fn: send "
        "application/json, text/csv or application/x-npy, or define input_fn in inference.py"
    )
    status, _, raw = post(
        server, "/predictions/defaults", "[[1, 2, 3]]", "application/json", {"Accept": "application/xml"}
    )
    assert status == 406, raw
    assert json.loads(raw)["code"] == "not_acceptable"
    bad = [("[[1, 2,", "application/json"), ("1,x,3", "text/csv"), (b"\x93NUMPY", "application/x-npy")]
    for body, content_type in bad:
        status, _, raw = post(server, "/predictions/defaults", body, content_type)
        assert status == 400, (content_type, raw)
        assert json.loads(raw)["code"] == "invalid_input"


# ------------------------------------------------------------------------------------------------ transform_fn


@pytest.mark.slow
def test_transform_fn_replaces_the_other_three(server: Server, store: Store) -> None:
    rows = [[1.0, 2.0], [-3.0, 0.5]]
    status, headers, raw = post(
        server, "/predictions/transform", json.dumps(rows), "application/json", {"Accept": "application/json"}
    )
    assert status == 200, raw
    assert headers["content-type"] == "application/vnd.deepcloud+json"
    answer = json.loads(raw)
    assert (answer["content_type"], answer["accept"]) == ("application/json", "application/json")
    with torch.no_grad():
        expected = (store.transform(torch.tensor(rows)) + 100.0).tolist()  # transform's helper: VALUE 100
    np.testing.assert_allclose(answer["transformed"], expected, rtol=1e-5)
    status, _, raw = post(server, "/predictions/transform", "[[1, 2, 3]]", "application/json")
    assert status == 500, "an exception in transform_fn is the model code's: 500"
    assert json.loads(raw)["request_id"]


# ---------------------------------------------------------------------------------------------- model_fn fails


@pytest.mark.slow
def test_a_failing_model_fn_answers_500_and_the_rest_keeps_serving(server: Server, store: Store) -> None:
    for i in range(2):
        status, _, raw = post(server, "/predictions/broken", "[1]", "application/json", {"X-Request-Id": f"broken-{i}"})
        assert status == 500
        assert json.loads(raw) == {
            "code": "internal_error",
            "request_id": f"broken-{i}",
            "message": f"inference failed; see the server log for request broken-{i}",
        }
    output = server.output()
    assert "model_fn in" in output
    assert "RuntimeError: model_fn found no weights in" in output
    status, _, raw = server.request("GET", "/ping")
    assert status == 200
    assert json.loads(raw) == {"status": "Healthy", "failed": ["broken:1"]}
    status, _, raw = post(server, "/predictions/full", "1 2 3 4", NUMBERS)
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw)["outputs"], run_full(store, [1, 2, 3, 4]), rtol=1e-5)
    assert post(server, "/predictions/defaults", "[[1, 2, 3]]", "application/json")[0] == 200


# ---------------------------------------------------------------------------------------- as SageMaker runs it


@pytest.mark.slow
def test_sm_model_dir_alone_is_served_on_invocations(servers: tuple[Server, Server], store: Store) -> None:
    single = servers[1]
    status, _, raw = single.request("GET", "/ping")
    assert (status, json.loads(raw)) == (200, {"status": "Healthy"})
    status, _, raw = post(
        single, "/invocations", json.dumps({"inputs": [4, 3, 2, 1]}), "application/json", {"Accept": "application/json"}
    )
    assert status == 200, raw
    np.testing.assert_allclose(json.loads(raw)["outputs"], run_full(store, [4, 3, 2, 1]), rtol=1e-5)
    assert post(single, "/predictions/model", "4 3 2 1", NUMBERS)[0] == 200, "the model's name is 'model'"


def test_a_model_tar_gz_that_escapes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from serving.loading import load_runner
    from serving.store import ModelRef

    scratch = tmp_path / "scratch" / "inner"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("code/inference.py", b"def model_fn(d):\n    return None\n"), ("../evil.py", b"x = 1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArtifactError, match=r"member '\.\./evil\.py' escapes the archive; refusing it"):
        load_runner(ModelRef("m", "1", archive), device="cpu")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.tar.gz"]
