"""Run the real Open Inference Protocol clients against a server; print what they got as one JSON object.

Runs in .venv-clients (requirements/clients.txt), not in the project's venv: ``python oip_clients.py
SCENARIO HOST:PORT INPUT.npy``. Each scenario uses the client the way its own documentation shows, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np


def triton(url: str, batch: np.ndarray) -> dict:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=url)
    out: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata("digits"),
        "version_metadata": client.get_model_metadata("digits", model_version="1"),
    }
    binary = httpclient.InferInput("input", list(batch.shape), "FP32")
    binary.set_data_from_numpy(batch)  # binary by default, and every output binary (binary_data_output)
    result = client.infer("digits", [binary])
    out["binary"] = {name: result.as_numpy(name).tolist() for name in ("probabilities", "index")}
    out["binary"]["label"] = [b.decode() for b in result.as_numpy("label").tolist()]
    as_json = httpclient.InferInput("input", list(batch.shape), "UINT8")
    as_json.set_data_from_numpy(batch.astype(np.uint8), binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("index", binary_data=False),
        httpclient.InferRequestedOutput("label", binary_data=True),
    ]
    result = client.infer("digits", [as_json], outputs=outputs, request_id="req-7", model_version="1")
    response = result.get_response()
    out["json"] = {
        "id": response["id"],
        "names": [o["name"] for o in response["outputs"]],
        "index": result.as_numpy("index").tolist(),
        "label": [b.decode() for b in result.as_numpy("label").tolist()],
    }
    wrong = httpclient.InferInput("pixels", list(batch.shape), "FP32")
    wrong.set_data_from_numpy(batch)
    try:
        client.infer("digits", [wrong])
    except InferenceServerException as exc:
        out["wrong_input"] = str(exc)
    try:
        client.get_model_metadata("nope")
    except InferenceServerException as exc:
        out["unknown_model"] = str(exc)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([binary])
    out["generated"] = {"json_size": json_size}
    with open(sys.argv[3] + ".body", "wb") as fh:  # for the SageMaker test: the body tritonclient builds
        fh.write(body)
    return out


def kserve(url: str, batch: np.ndarray) -> dict:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> dict:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        base = f"http://{url}"
        out = {
            "live": await client.is_server_live(base),
            "ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, "digits"),
        }
        for binary in (False, True):
            tensor = InferInput(name="input", shape=list(batch.shape), datatype="FP32")
            tensor.set_data_from_numpy(batch, binary_data=binary)
            response = await client.infer(
                base,
                InferRequest(model_name="digits", infer_inputs=[tensor], request_id=f"k-{binary}"),
                model_name="digits",
            )
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            out["binary" if binary else "json"] = {
                "id": response.id,
                "probabilities": outputs["probabilities"].tolist(),
                "index": outputs["index"].tolist(),
                "label": [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].tolist()],
            }
        await client.close()
        return out

    return asyncio.run(run())


if __name__ == "__main__":
    scenario, address, path = sys.argv[1:4]
    print(json.dumps({"triton": triton, "kserve": kserve}[scenario](address, np.load(path))))
