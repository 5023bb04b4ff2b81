"""SageMaker multi-model endpoints: the container API (serving/multimodel.py), in process and in a real server.

The contract tested is AWS's "Custom Containers Contract for Multi-Model Endpoints"
(awsdocs/amazon-sagemaker-developer-guide doc_source/mms-container-apis.md): POST /models loads
{model_name, url} (409 when loaded, 507 when there is no room), GET /models lists {modelName, modelUrl}
with nextPageToken paging, GET and DELETE /models/{name} (404 when not loaded), POST /models/{name}/invoke.
SageMaker unpacks each model.tar.gz to /opt/ml/models/<name>/model before it calls the load.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from serving.runner import Reply, Runner
from tests.conftest import http_request
from tests.serving.conftest import write_tiny_artifact
from tests.serving.live import images, reference_indices

MiB = 1024 * 1024
TARGET = "X-Amzn-SageMaker-Target-Model"


def _padded(root: Path, name: str, pad: int, seed: int = 0) -> str:
    """A model unpacked the way SageMaker unpacks one (``<root>/<name>/model``), with ``pad`` bytes of extra
    files so its size is known; the url SageMaker would send for it."""
    model = write_tiny_artifact(root / name / "model", seed=seed)
    (model / "pad.bin").write_bytes(b"\0" * pad)
    return str(model)


class Gate(Runner):
    """A model whose forward pass waits for the test: it holds a request in flight."""

    kind = "gate"

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, payloads):
        self.entered.set()
        assert self.release.wait(30)
        return [Reply(b"gated", "text/plain") for _ in payloads]


@pytest.fixture
def host(tmp_path: Path):
    """An in-process server in multi-model mode, whose budget and loads the test controls."""
    from starlette.testclient import TestClient

    from serving.app import build_app
    from serving.loading import load_runner
    from serving.multimodel import MultiModelHost, build_multi_model_app, handles
    from serving.state import LoadedModel, ServerState

    root = tmp_path / "models"
    root.mkdir()
    loads: list[str] = []
    gates: dict[str, Gate] = {}

    def load(ref):
        loads.append(ref.name)
        time.sleep(0.3)  # long enough for a second request for the same model to arrive during the load
        runner = gates[ref.name] if ref.name in gates else load_runner(ref)
        return LoadedModel(ref.name, ref.version, runner)

    state = ServerState()
    multi = MultiModelHost(state, root, budget=int(2.5 * MiB), load=load, measure=lambda: 0)
    app = build_app(state, load=lambda: [], multi_model=(handles, build_multi_model_app(multi)))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not state.ready:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client, root, multi, loads, gates


def _load(client, name: str, url: str):
    return client.post("/models", json={"model_name": name, "url": url})


def _invoke(client, name: str, batch: np.ndarray):
    return client.post(f"/models/{name}/invoke", json={"instances": batch.tolist()})


def test_least_recently_invoked_idle_model_is_unloaded_to_make_room(host) -> None:
    client, root, multi, _, _ = host
    urls = {name: _padded(root, name, MiB, seed) for seed, name in enumerate("abc")}
    assert _load(client, "a", urls["a"]).status_code == 200
    assert _load(client, "b", urls["b"]).status_code == 200
    assert _invoke(client, "a", images(1, 0)).status_code == 200  # b is now the least recently used
    response = _load(client, "c", urls["c"])
    assert response.status_code == 200, response.text
    assert sorted(m["modelName"] for m in client.get("/models").json()["models"]) == ["a", "c"]
    assert client.get("/models/b").status_code == 404
    assert _invoke(client, "b", images(1, 0)).status_code == 404
    assert "b:1" not in client.get("/metrics").text  # unloaded for real: no batcher, no metrics left
    assert multi.used <= multi.budget


def test_no_room_is_507_and_nothing_in_flight_is_unloaded(host) -> None:
    client, root, _, _, gates = host
    gates["busy"] = Gate()
    busy = _padded(root, "busy", 2 * MiB)
    assert _load(client, "busy", busy).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(
            client.post, "/models/busy/invoke", content=b"x", headers={"Content-Type": "application/octet-stream"}
        )
        assert gates["busy"].entered.wait(10)
        response = _load(client, "next", _padded(root, "next", MiB))
        assert response.status_code == 507
        assert "held by models with requests in flight" in response.json()["message"]
        gates["busy"].release.set()
        assert in_flight.result(30).status_code == 200  # the busy model was left alone
    # Whole-budget check: a model larger than the budget is a 507 however much is free.
    big = _padded(root, "big", 3 * MiB)
    assert _load(client, "big", big).status_code == 507
    # Once idle, the busy model is the one unloaded for the next.
    assert _load(client, "next", str(root / "next" / "model")).status_code == 200
    assert [m["modelName"] for m in client.get("/models").json()["models"]] == ["next"]


def test_concurrent_loads_of_one_model_load_it_once(host) -> None:
    client, root, _, loads, _ = host
    url = _padded(root, "m", 0)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _load(client, "m", url), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert loads == ["m"]
    assert _load(client, "m", url).status_code == 409  # loaded now: the contract's 409
    other = _padded(root, "m2", 0)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_load, client, "n", other)
        time.sleep(0.1)
        clash = _load(client, "n", url)  # the same name from another place while it loads
    assert first.result().status_code == 200
    assert clash.status_code == 409
    assert "is being loaded from" in clash.json()["message"]


def test_paging_and_bad_requests(host) -> None:
    client, root, _, _, _ = host
    for name in ("p1", "p2", "p3"):
        assert _load(client, name, _padded(root, name, 0)).status_code == 200
    first = client.get("/models?limit=2").json()
    assert [m["modelName"] for m in first["models"]] == ["p1", "p2"]
    assert first["nextPageToken"] == "2"
    rest = client.get(f"/models?limit=2&next_page_token={first['nextPageToken']}").json()
    assert [m["modelName"] for m in rest["models"]] == ["p3"]
    assert "nextPageToken" not in rest
    assert rest["models"][0]["modelUrl"] == str(root / "p3" / "model")
    assert client.get("/models?limit=0").status_code == 400
    assert client.post("/models", content=b"{").status_code == 400
    assert client.post("/models", json={"model_name": "../x", "url": "p1"}).status_code == 400
    assert client.post("/models", json={"model_name": "x"}).status_code == 400
    assert client.delete("/models/nope").status_code == 404
    assert client.post("/invocations", json=[[0] * 8] * 8).status_code == 400  # no TargetModel


@pytest.mark.slow
def test_a_real_server_in_multi_model_mode(tmp_path: Path, start_server) -> None:
    """SAGEMAKER_MULTI_MODEL=true as SageMaker sets it: two models with their own weights, answered by name."""
    root = tmp_path / "opt-ml-models"
    urls = {"a1b2": _padded(root, "a1b2", 0, seed=1), "c3d4": _padded(root, "c3d4", 0, seed=2)}
    outside = write_tiny_artifact(tmp_path / "outside" / "model")
    (root / "escape").symlink_to(outside.parent)
    (root / "sparse").mkdir()
    with (root / "sparse" / "huge.bin").open("wb") as fh:  # 1 TiB by its size, no disk: never fits a budget
        fh.truncate(2**40)
    shutil.copy(outside / "manifest.json", root / "sparse" / "manifest.json")
    server = start_server(
        tmp_path / "unused", env={"SAGEMAKER_MULTI_MODEL": "true", "DEEPCLOUD_MULTI_MODEL_DIR": str(root)}
    )
    server.wait_ready()  # no model yet, and healthy: SageMaker loads them on the first invocations

    def call(method: str, path: str, payload: object = None, headers: dict | None = None) -> tuple[int, dict]:
        body = None if payload is None else json.dumps(payload).encode()
        status, _, raw = http_request(
            server.port, method, path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        return status, json.loads(raw or b"null")

    for name, url in urls.items():
        assert call("POST", "/models", {"model_name": name, "url": url}) == (
            200,
            {"status": f"Model {name!r} loaded", "modelName": name, "modelUrl": url},
        )
    batch = images(5, seed=3)
    for name, url in urls.items():
        status, answer = call(
            "POST", f"/models/{name}/invoke", {"instances": batch.tolist()}, {TARGET: f"runs/{name}.tar.gz"}
        )
        assert status == 200, answer
        assert [p["index"] for p in answer["predictions"]] == reference_indices(Path(url), batch)
    assert reference_indices(Path(urls["a1b2"]), batch) != reference_indices(Path(urls["c3d4"]), batch), (
        "the two models must differ, or routing to the wrong one would go unnoticed"
    )
    status, answer = call("POST", "/invocations", {"instances": batch.tolist()}, {TARGET: "c3d4"})
    assert status == 200
    assert [p["index"] for p in answer["predictions"]] == reference_indices(Path(urls["c3d4"]), batch)
    assert call("POST", "/models", {"model_name": "a1b2", "url": urls["a1b2"]})[0] == 409
    assert call("GET", "/models") == (200, {"models": [{"modelName": n, "modelUrl": u} for n, u in urls.items()]})

    for url in ("/etc", str(tmp_path / "outside" / "model"), str(root / "escape" / "model"), "../outside/model"):
        status, answer = call("POST", "/models", {"model_name": "evil", "url": url})
        assert status == 400, (url, answer)
        assert "outside the multi-model directory" in answer["message"], answer
    assert call("POST", "/models", {"model_name": "huge", "url": str(root / "sparse")})[0] == 507
    assert call("GET", "/models/evil")[0] == 404
    assert call("GET", "/models/huge")[0] == 404

    assert call("DELETE", "/models/a1b2") == (200, {"status": "Model 'a1b2' unloaded"})
    assert call("POST", "/models/a1b2/invoke", {"instances": batch.tolist()})[0] == 404
    assert call("DELETE", "/models/a1b2")[0] == 404
    assert call("GET", "/models/c3d4") == (200, {"modelName": "c3d4", "modelUrl": urls["c3d4"]})
    assert server.request("GET", "/ping")[0] == 200
    assert "Traceback" not in server.output()


def test_multi_model_settings_fail_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "serving", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "SAGEMAKER_MULTI_MODEL": "true", **env},
            timeout=60,
        )

    missing = run(DEEPCLOUD_MULTI_MODEL_DIR=str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: multi-model directory {tmp_path / 'nope'} is not a directory: create it or set --multi-model-dir"
    )
    store = run("--model-store", str(tmp_path), DEEPCLOUD_MULTI_MODEL_DIR=str(tmp_path))
    assert store.returncode == 1
    assert "drop --models and --model-store" in store.stderr
    budget = run("--multi-model-memory-bytes", "lots", DEEPCLOUD_MULTI_MODEL_DIR=str(tmp_path))
    assert budget.returncode == 1
    assert "--multi-model-memory-bytes 'lots' is not a whole number" in budget.stderr
    assert "Traceback" not in missing.stderr + store.stderr + budget.stderr


def _probabilities(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    module = torch.export.load(model_dir / "model.pt2").module()
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(batch)), dim=1).numpy()


class _MultiModelFrontEnd(http.server.BaseHTTPRequestHandler):
    """A stand-in for SageMaker's runtime front end on a multi-model endpoint, as AWS documents it: InvokeEndpoint
    sends TargetModel as the X-Amzn-SageMaker-Target-Model header (botocore model sagemaker-runtime,
    InvokeEndpointInput.TargetModel); the platform downloads <prefix>/<TargetModel>, unpacks it to
    /opt/ml/models/<model_name>/model, calls POST /models with an opaque model_name, then
    POST /models/<model_name>/invoke with Content-Type, Accept and the header (mms-container-apis.md,
    invoke-multi-model-endpoint.md). Here the S3 prefix is a local folder and model_name a hash of the target."""

    prefix = Path()
    models_dir = Path()
    container_port = 0
    loads: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        assert self.path.startswith("/endpoints/"), self.path
        assert self.path.endswith("/invocations"), self.path
        target = self.headers["X-Amzn-SageMaker-Target-Model"]
        name = hashlib.sha256(target.encode()).hexdigest()[:32]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if http_request(self.container_port, "GET", f"/models/{name}")[0] == 404:
            model = self.models_dir / name / "model"
            model.mkdir(parents=True)
            with tarfile.open(self.prefix / target) as archive:
                archive.extractall(model, filter="data")
            load = json.dumps({"model_name": name, "url": str(model)}).encode()
            assert (
                http_request(self.container_port, "POST", "/models", load, {"Content-Type": "application/json"})[0]
                == 200
            )
            self.loads.append(target)
        status, headers, answer = http_request(
            self.container_port,
            "POST",
            f"/models/{name}/invoke",
            body,
            {"Content-Type": self.headers["Content-Type"], "X-Amzn-SageMaker-Target-Model": target},
        )
        self.send_response(status)
        self.send_header("Content-Type", headers["content-type"])
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_boto3_invoke_endpoint_with_target_model_reaches_the_model_it_names(tmp_path: Path, start_server) -> None:
    import boto3

    prefix, models_dir = tmp_path / "s3-models", tmp_path / "opt-ml-models"
    prefix.mkdir()
    models_dir.mkdir()
    sources = {}
    for seed, run in enumerate(("run-a", "run-b")):  # what make deploy copies under the models/ prefix
        sources[run] = write_tiny_artifact(tmp_path / "runs" / run, seed=seed + 5)
        with tarfile.open(prefix / f"{run}.tar.gz", "w:gz") as archive:
            for path in sorted(sources[run].iterdir()):
                archive.add(path, arcname=path.name)
    server = start_server(
        tmp_path / "unused", env={"SAGEMAKER_MULTI_MODEL": "true", "DEEPCLOUD_MULTI_MODEL_DIR": str(models_dir)}
    )
    server.wait_ready()
    _MultiModelFrontEnd.prefix, _MultiModelFrontEnd.models_dir = prefix, models_dir
    _MultiModelFrontEnd.container_port, _MultiModelFrontEnd.loads = server.port, []
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MultiModelFrontEnd)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    batch = images(4, seed=9)
    try:
        runtime = boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # the stand-in checks no signature
            endpoint_url=f"http://127.0.0.1:{front.server_address[1]}",
        )
        got = {}
        for run in ("run-a", "run-b", "run-a"):
            answer = runtime.invoke_endpoint(
                EndpointName="digits-mme",
                TargetModel=f"{run}.tar.gz",
                ContentType="application/json",
                Body=json.dumps({"instances": batch.tolist()}),
            )
            predictions = json.loads(answer["Body"].read())["predictions"]
            got.setdefault(run, []).append(np.array([p["probabilities"] for p in predictions]))
    finally:
        front.shutdown()
    expected = {run: _probabilities(path, batch) for run, path in sources.items()}
    for run, answers in got.items():
        for answer in answers:
            np.testing.assert_allclose(answer, expected[run], atol=2e-6)  # the server rounds to 6 places
    assert np.abs(expected["run-a"] - expected["run-b"]).max() > 1e-3, "the two models must tell apart"
    assert _MultiModelFrontEnd.loads == ["run-a.tar.gz", "run-b.tar.gz"]  # loaded once each, then served
    assert len(json.loads(server.request("GET", "/models")[2])["models"]) == 2
