"""The real server process over real HTTP: contract routes, error mapping, and failing to start cleanly."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from serving.app import build_app
from serving.artifact import load_artifact
from serving.runner import NativeRunner
from serving.state import LoadedModel, ServerState
from tests.conftest import REPO, http_request, port_is_free
from tests.serving.conftest import app_client

IMAGE = [[0] * 8 for _ in range(8)]


def test_ping_is_503_until_the_model_is_loaded(tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    release = threading.Event()

    def slow_load() -> list[LoadedModel]:
        assert release.wait(30)
        return [LoadedModel("model", "1", NativeRunner(artifact))]

    state = ServerState()
    with TestClient(build_app(state, load=slow_load)) as client:
        assert client.get("/ping").status_code == 503
        response = client.post("/invocations", json=[IMAGE])
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/ping").json() == {"status": "Healthy"}
        assert client.post("/invocations", json=[IMAGE]).status_code == 200


class Flaky:
    """A model that raises inside model code while ``broken`` is set."""

    def __init__(self, module) -> None:
        self.module, self.broken = module, False

    def __call__(self, x):
        if self.broken:
            raise RuntimeError("boom inside model code")
        return self.module(x)


def test_model_code_failure_is_a_500_with_request_id_and_serving_goes_on(tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    flaky = Flaky(artifact.module)
    with app_client(dataclasses.replace(artifact, module=flaky)) as (client, _):
        flaky.broken = True
        response = client.post("/invocations", json=[IMAGE], headers={"X-Amzn-RequestId": "req-123"})
        assert response.status_code == 500
        assert response.json() == {
            "code": "internal_error",
            "request_id": "req-123",
            "message": "inference failed; see the server log for request req-123",
        }
        flaky.broken = False
        assert client.post("/invocations", json=[IMAGE]).status_code == 200
        metrics = client.get("/metrics").text
        assert 'deepcloud_requests_total{code="500",model="model:1",route="/invocations"} 1.0' in metrics
        assert 'deepcloud_requests_total{code="200",model="model:1",route="/invocations"} 1.0' in metrics


@pytest.mark.slow
def test_contract_routes_and_error_mapping_over_http(tiny_artifact: Path, start_server) -> None:
    server = start_server(tiny_artifact)
    server.wait_ready()
    status, body = server.invoke({"instances": [IMAGE, IMAGE]})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == [body["predictions"][0]["label"]] * 2

    status, headers, raw = server.request("POST", "/invocations", b"x", {"Content-Type": "text/csv"})
    assert status == 415
    assert json.loads(raw)["message"] == (
        "content type 'text/csv' is not supported: send one of "
        "application/json, application/x-npy, image/png, image/jpeg"
    )
    assert headers["x-request-id"]

    big = b"[" + b"0," * (3 * 1024 * 1024) + b"0]"
    status, _, raw = server.request("POST", "/invocations", big, {"Content-Type": "application/json"})
    assert status == 413
    assert json.loads(raw)["code"] == "payload_too_large"

    for bad, message in [
        (b"{", "not valid JSON"),
        (b"[NaN]", "NaN"),
        (b"[[1, 2]]", "expected shape [1, 8, 8]"),
        (b"", "empty body"),
    ]:
        status, _, raw = server.request("POST", "/invocations", bad, {"Content-Type": "application/json"})
        assert status == 400, raw
        error = json.loads(raw)
        assert error["code"] == "invalid_input"
        assert message in error["message"]

    status, _, raw = server.request("GET", "/models")
    assert status == 404
    assert json.loads(raw)["code"] == "not_found"
    assert server.request("GET", "/ping")[0] == 200, "the server must keep serving after bad requests"


@pytest.mark.slow
def test_serves_a_model_tar_gz(tiny_artifact: Path, start_server, tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tiny_artifact.iterdir()):
            tar.add(path, arcname=path.name)
    server = start_server(archive)
    server.wait_ready()
    assert server.invoke([IMAGE])[0] == 200


@pytest.mark.slow
def test_corrupted_checksum_exits_with_one_line_and_frees_the_port(tiny_artifact: Path, start_server) -> None:
    model = tiny_artifact / "model.pt2"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    server = start_server(tiny_artifact)
    assert server.wait_exit(timeout=60) == 1
    output = server.output()
    assert output.strip().splitlines()[-1].startswith(f"error: checksum mismatch for {model}: sha256 ")
    assert "Traceback" not in output
    assert port_is_free(server.port), "nothing may keep listening after a failed start"


@pytest.mark.slow
def test_port_in_use_exits_with_one_line(tiny_artifact: Path, start_server) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        server = start_server(tiny_artifact, port=port)
        assert server.wait_exit(timeout=60) == 1
        assert server.output().strip() == (
            f"error: port {port} on 127.0.0.1 is already in use: stop whatever listens there "
            "(make destroy) or pick another port with SAGEMAKER_BIND_TO_PORT"
        )


@pytest.mark.slow
def test_sigterm_stops_gracefully(tiny_artifact: Path, start_server) -> None:
    server = start_server(tiny_artifact)
    server.wait_ready()
    started = time.monotonic()
    server.stop()
    # uvicorn drains, then re-raises the signal so the exit status says "stopped by SIGTERM".
    assert server.proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 30
    assert "Shutting down" in server.output()
    assert "Traceback" not in server.output()
    assert port_is_free(server.port)


def test_bad_port_and_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--port", "http"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: port 'http' is not a port number: set SAGEMAKER_BIND_TO_PORT to 1-65535"
    result = subprocess.run(
        [sys.executable, "-m", "serving", "train"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "invalid choice: 'train'" in result.stderr


def test_nothing_heavy_is_imported_before_the_socket_listens() -> None:
    # SageMaker wants the port listening within 250 ms: torch (~1 s to import) must load on the inference
    # thread, after bind(). Everything the main thread imports before uvicorn runs is checked here.
    code = (
        "import sys; import serving.__main__, serving.app, serving.batching, serving.store, serving.codec, "
        "serving.runner, serving.metrics, serving.openapi, serving.errors, serving.management, uvicorn; "
        "heavy = sorted(m for m in ('torch', 'PIL', 'ts') if m in sys.modules); "
        "print(heavy); sys.exit(bool(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


PING_TIMEOUT_S = 2.0
"""SageMaker's /ping timeout."""


@pytest.mark.slow
def test_ping_answers_503_while_loading_then_200(tiny_artifact: Path, start_server) -> None:
    server = start_server(tiny_artifact)
    statuses, slowest = [], 0.0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            statuses.append(http_request(server.port, "GET", "/ping", timeout=PING_TIMEOUT_S)[0])
            slowest = max(slowest, time.monotonic() - started)
        except ConnectionRefusedError:
            statuses.append(None)  # not yet listening
        if statuses[-1] == 200:
            break
        time.sleep(0.01)
    answered = [s for s in statuses if s is not None]
    assert answered[0] == 503, f"/ping must answer (503) while the model loads: {statuses[:20]}"
    # Within SageMaker's timeout from the moment the port accepts: importing torch on the event loop held the
    # first /ping for 2-2.5 s here (a timeout, for SageMaker's probe).
    assert slowest < PING_TIMEOUT_S
    assert answered[-1] == 200
    assert "listening on http://127.0.0.1:" in server.output()
