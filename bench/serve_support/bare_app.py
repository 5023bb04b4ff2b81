"""The bare floor of `make bench-serve`: the least a Python HTTP server must do to serve the model.

::

    python -m bench.serve_support.bare_app --model-dir DIR --port 8090 --threads 2

One Starlette app on uvicorn (one worker, no access log), ``POST /predict`` and ``GET /ping``. A request is
json-decoded, turned into a float32 batch of the manifest's input shape, run through the exported program
under ``torch.inference_mode`` directly on the event loop (so one request at a time, no thread hop), and
answered in the server's JSON shape: ``{"predictions": [{"label", "index", "probabilities"}]}``. No
validation, no batching, no checksum: a floor to measure the real server's overhead against.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build_app(model_dir: Path, threads: int) -> Starlette:
    torch.set_num_threads(threads)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    module = torch.export.load(model_dir / manifest["model"]["file"]).module()
    labels, shape = manifest["labels"], tuple(manifest["input"]["shape"])
    with torch.inference_mode():
        module(torch.zeros((1, *shape)))  # warm-up, as the real server does before /ping says 200

    async def ping(request: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    async def predict(request: Request) -> Response:
        payload = json.loads(await request.body())
        if isinstance(payload, dict):
            payload = payload["instances"]
        batch = torch.from_numpy(np.asarray(payload, dtype=np.float32).reshape(-1, *shape))
        with torch.inference_mode():
            probs = torch.softmax(module(batch), dim=1).numpy()
        predictions = []
        for row in probs:
            index = int(row.argmax())
            predictions.append(
                {
                    "label": labels[index],
                    "index": index,
                    "probabilities": [round(float(p), 6) if math.isfinite(p) else 0.0 for p in row],
                }
            )
        return JSONResponse({"predictions": predictions})

    return Starlette(routes=[Route("/ping", ping, methods=["GET"]), Route("/predict", predict, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_support.bare_app", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="artifact directory (manifest.json, model.pt2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args(argv)
    app = build_app(args.model_dir, args.threads)
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False, server_header=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
