"""The Open Inference Protocol: the real tritonclient and kserve clients, unchanged, over real HTTP; Triton's
SageMaker body through boto3's invoke_endpoint; OIP requests batched with the other routes' requests.

The clients run in their own venv, .venv-clients (requirements/clients.txt: kserve pins fastapi, kubernetes and
grpcio, which the server's venv must not take), made by tests/serving/oip_venv.py in the background from the
start of the session and reused while the requirements file is unchanged.
"""

from __future__ import annotations

import http.server
import json
import struct
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Server, http_request
from tests.serving import oip_venv
from tests.serving.conftest import app_client
from tests.serving.live import images, reference_indices, write_store


@pytest.fixture(scope="session")
def clients_python() -> Path:
    """The interpreter of .venv-clients (tests/serving/oip_venv.py; its install began with the session)."""
    return oip_venv.python()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    store = write_store(tmp_path_factory.mktemp("oip") / "store", {"digits": ["1"]})
    server = Server(store, args=("--model-store", str(store), "--no-access-log"))
    try:
        server.wait_ready()
        yield server, store / "digits" / "1"
    finally:
        server.stop()


def _run_clients(python: Path, scenario: str, port: int, batch: np.ndarray, tmp_path: Path) -> dict:
    path = tmp_path / "batch.npy"
    np.save(path, batch)
    done = subprocess.run(
        [str(python), str(Path(__file__).with_name("oip_clients.py")), scenario, f"127.0.0.1:{port}", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _reference(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    module = torch.export.load(model_dir / "model.pt2").module()
    with torch.inference_mode():
        logits = module(torch.from_numpy(batch)).numpy()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_tritonclient_unchanged(served, clients_python: Path, tmp_path: Path) -> None:
    server, model_dir = served
    batch = images(5, seed=3)
    got = _run_clients(clients_python, "triton", server.port, batch, tmp_path)
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    assert got["server"] == {"name": "deepcloud", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert (
        got["metadata"]
        == got["version_metadata"]
        == {
            "name": "digits",
            "versions": ["1"],
            "platform": "pytorch_torchexport",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "index", "datatype": "INT64", "shape": [-1]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
        }
    )
    expected = reference_indices(model_dir, batch)
    np.testing.assert_allclose(got["binary"]["probabilities"], _reference(model_dir, batch), rtol=1e-5, atol=1e-6)
    assert got["binary"]["index"] == expected
    assert got["binary"]["label"] == [str(i) for i in expected]  # the digits model's labels are "0".."9"
    assert got["json"] == {
        "id": "req-7",
        "names": ["index", "label"],
        "index": expected,
        "label": [str(i) for i in expected],
    }
    assert "this model takes one input named 'input', got ['pixels']" in got["wrong_input"]
    assert "no model named 'nope' is loaded" in got["unknown_model"]


@pytest.mark.slow
def test_kserve_rest_client_unchanged(served, clients_python: Path, tmp_path: Path) -> None:
    server, model_dir = served
    batch = images(4, seed=5)
    got = _run_clients(clients_python, "kserve", server.port, batch, tmp_path)
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    expected = reference_indices(model_dir, batch)
    for form in ("json", "binary"):
        assert got[form]["id"] == f"k-{form == 'binary'}"
        assert got[form]["index"] == expected
        assert got[form]["label"] == [str(i) for i in expected]
        np.testing.assert_allclose(got[form]["probabilities"], _reference(model_dir, batch), rtol=1e-5, atol=1e-6)


class _SageMakerFrontEnd(http.server.BaseHTTPRequestHandler):
    """A stand-in for SageMaker's runtime front end, as AWS documents InvokeEndpoint: the request's Body and
    ContentType reach the container's POST /invocations, no other header does; the answer's Body and
    ContentType come back (botocore model sagemaker-runtime InvokeEndpoint: ContentType and Body, plus
    CustomAttributes, which this test does not use). Triton's SageMaker mode exists because of that."""

    container_port = 0

    def do_POST(self) -> None:
        assert self.path.startswith("/endpoints/"), self.path
        assert self.path.endswith("/invocations"), self.path
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status, headers, answer = http_request(
            self.container_port, "POST", "/invocations", body, {"Content-Type": self.headers["Content-Type"]}
        )
        self.send_response(status)
        self.send_header("Content-Type", headers["content-type"])
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("x-amzn-Invoked-Production-Variant", "AllTraffic")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_triton_body_goes_through_boto3_invoke_endpoint_unchanged(
    served, clients_python: Path, tmp_path: Path
) -> None:
    import boto3

    server, model_dir = served
    batch = images(3, seed=11)
    json_size = _run_clients(clients_python, "triton", server.port, batch, tmp_path)["generated"]["json_size"]
    body = (tmp_path / "batch.npy.body").read_bytes()  # tritonclient's generate_request_body, binary input
    _SageMakerFrontEnd.container_port = server.port
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SageMakerFrontEnd)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        runtime = boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # the stand-in checks no signature
            endpoint_url=f"http://127.0.0.1:{front.server_address[1]}",
        )
        answer = runtime.invoke_endpoint(
            EndpointName="digits",
            Body=body,
            ContentType=f"application/vnd.sagemaker-triton.binary+json;json-header-size={json_size}",
        )
    finally:
        front.shutdown()
    content_type, payload = answer["ContentType"], answer["Body"].read()
    media, _, parameter = content_type.partition(";")
    assert media == "application/vnd.sagemaker-triton.binary+json"
    header_size = int(parameter.split("=", 1)[1])
    header = json.loads(payload[:header_size])
    offset, outputs = header_size, {}
    for output in header["outputs"]:  # every output binary, as tritonclient asked (binary_data_output)
        size = output["parameters"]["binary_data_size"]
        outputs[output["name"]] = payload[offset : offset + size]
        offset += size
    assert offset == len(payload)
    probabilities = np.frombuffer(outputs["probabilities"], dtype="<f4").reshape(3, 10)
    np.testing.assert_allclose(probabilities, _reference(model_dir, batch), rtol=1e-5, atol=1e-6)
    assert np.frombuffer(outputs["index"], dtype="<i8").tolist() == reference_indices(model_dir, batch)
    labels, raw = [], outputs["label"]
    while raw:
        (length,) = struct.unpack("<I", raw[:4])
        labels.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    assert labels == [str(i) for i in reference_indices(model_dir, batch)]


@pytest.mark.slow
def test_oip_requests_batch_together_with_the_other_routes(tmp_path: Path, start_server) -> None:
    store = write_store(tmp_path / "store", {"digits": ["1"]})
    server = start_server(
        store, args=("--model-store", str(store), "--max-batch-delay-ms", "1500", "--max-batch-size", "8")
    )
    server.wait_ready()
    batch = images(2, seed=1)
    oip = json.dumps(
        {"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": batch.ravel().tolist()}]}
    ).encode()
    sagemaker = json.dumps({"instances": batch.tolist()}).encode()
    with ThreadPoolExecutor(2) as pool:
        answers = [
            pool.submit(http_request, server.port, "POST", path, body, {"Content-Type": "application/json"})
            for path, body in (("/v2/models/digits/infer", oip), ("/predictions/digits", sagemaker))
        ]
        (oip_status, _, oip_body), (sm_status, _, sm_body) = (f.result() for f in answers)
    assert (oip_status, sm_status) == (200, 200)
    assert json.loads(oip_body)["outputs"][1]["data"] == [p["index"] for p in json.loads(sm_body)["predictions"]]
    _, _, metrics = http_request(server.port, "GET", "/metrics")
    text = metrics.decode()
    assert 'deepcloud_batch_size_count{model="digits:1"} 1.0' in text  # one forward pass for both
    assert 'deepcloud_batch_size_sum{model="digits:1"} 4.0' in text


# ------------------------------------------------------------------------------------------ in-process errors


@pytest.fixture(scope="module")
def client(tiny_artifact_template: Path):
    from serving.artifact import load_artifact

    with app_client(load_artifact(tiny_artifact_template)) as (http, _):
        yield http


def _infer(client, body: bytes, headers: dict[str, str] | None = None, path: str = "/v2/models/model/infer"):
    response = client.post(path, content=body, headers={"Content-Type": "application/json", **(headers or {})})
    return response.status_code, response.json() if response.headers["content-type"].startswith(
        "application/json"
    ) else response.content


def _tensor(**overrides: object) -> bytes:
    spec = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64, **overrides}
    return json.dumps({"inputs": [spec]}).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{not json", {}, 400, "the inference request is not valid JSON"),
        (b"[]", {}, 400, 'must be a JSON object with "inputs"'),
        (_tensor(name="x"), {}, 400, "this model takes one input named 'input', got ['x']"),
        (_tensor(datatype="BYTES"), {}, 400, "datatype 'BYTES' is not a number type"),
        (_tensor(datatype="BOOL"), {}, 400, "datatype 'BOOL' is not a number type"),
        (_tensor(datatype={}), {}, 400, "datatype {} is not a number type"),  # found by test_openapi_fuzz.py: was a 500
        (_tensor(parameters=[]), {}, 400, """input 'input': "parameters" must be an object"""),
        (_tensor(shape=[1, 1, 8]), {}, 400, '"data" has 64 values but shape [1, 1, 8] needs 8'),
        (_tensor(shape=[1, 1, 8, -8]), {}, 400, '"shape" must be a list of non-negative integers'),
        (_tensor(data=["a"] * 64), {}, 400, '"data" must be numbers'),
        (_tensor(data=[300.0] * 64), {}, 400, "input values must lie in [0, 255], got [300, 300]"),
        (_tensor(shape=[1, 2, 8, 4]), {}, 400, "input has shape [1, 2, 8, 4]: expected shape [1, 8, 8]"),
        (
            _tensor(data=None, parameters={"binary_data_size": 256}),
            {"Inference-Header-Content-Length": "10"},
            400,
            "the inference request is not valid JSON",
        ),
        (
            _tensor(data=None, parameters={"binary_data_size": 256}),
            {},
            400,
            "has binary_data_size but the request has no Inference-Header-Content-Length",
        ),
        (
            json.dumps({"inputs": [json.loads(_tensor())["inputs"][0]], "outputs": [{"name": "logits"}]}).encode(),
            {},
            400,
            "output 'logits' is not one of this model's: probabilities, index, label",
        ),
        (_tensor(), {"Content-Type": "text/csv"}, 415, "is not an inference request"),
    ],
)
def test_bad_requests_get_the_protocols_error_body(
    client, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    got_status, got = _infer(client, body, headers)
    assert got_status == status
    assert set(got) == {"error"}
    assert message in got["error"]


def test_binary_inputs_must_add_up(client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
            ]
        }
    ).encode()
    pixels = np.zeros(64, dtype="<f4").tobytes()
    status, got = _infer(client, header + pixels, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200
    assert [o["name"] for o in got["outputs"]] == ["probabilities", "index", "label"]
    status, got = _infer(client, header + pixels[:-4], {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400
    assert "binary_data_size 256 does not match shape [1, 1, 8, 8] of FP32 (256 bytes, 252 sent)" in got["error"]
    # 2**64 elements wrap to 0 in int64 arithmetic, which once matched an empty binary tensor and failed with a 500.
    huge = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2**16] * 4, "datatype": "UINT8", "parameters": {"binary_data_size": 0}}
            ]
        }
    ).encode()
    status, got = _infer(client, huge, {"Inference-Header-Content-Length": str(len(huge))})
    assert status == 400
    assert "binary_data_size 0 does not match shape" in got["error"]


def test_unknown_models_and_readiness(client) -> None:
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").json() == {"error": "no model named 'nope' is loaded (loaded: model)"}
    assert client.get("/v2/models/model/versions/9").status_code == 404
    assert client.get("/v2/models/model/ready").json() == {"name": "model", "ready": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    status, got = _infer(client, _tensor(), path="/v2/models/nope/infer")
    assert (status, set(got)) == (404, {"error"})


def test_a_handler_model_is_not_served_on_the_protocol(tmp_path: Path) -> None:
    from serving.runner import Runner

    class Handler(Runner):
        kind = "torchserve"

        def forward(self, payloads):
            raise AssertionError("the route refuses the request before any forward pass")

    with app_client([("h", "1", Handler())]) as (http, _):
        assert http.get("/v2/models/h").status_code == 400
        status, got = _infer(http, _tensor(), path="/v2/models/h/infer")
    assert status == 400
    assert "a torchserve model is served on /predictions and /invocations only" in got["error"]


def test_the_app_and_the_codec_agree_on_the_sagemaker_content_type() -> None:
    from serving import inference, oip

    assert inference.SAGEMAKER_TRITON == oip.SAGEMAKER_TRITON
