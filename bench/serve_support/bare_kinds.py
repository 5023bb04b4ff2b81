"""The bare floors of `make bench-serve` for user code: a Starlette endpoint calling a TorchServe handler, or
a SageMaker ``inference.py``, the way our server calls it, with nothing else around it.

::

    python -m bench.serve_support.bare_kinds --kind handler --model-dir DIR --port 8090 --threads 2
    python -m bench.serve_support.bare_kinds --kind script --model-dir DIR --port 8090 --threads 2

One Starlette app on uvicorn (one worker, no access log), ``POST /predict`` and ``GET /ping``; the user code
runs directly on the event loop (one request at a time, no thread hop, no validation, no batching):

- ``handler``: ``handle([{"body": <parsed JSON>}], context)`` from ``DIR/torchserve_handler.py``, one
  request per call, with the least context a handler needs (``system_properties["model_dir"]``, the
  response content type and status setters) -- the value TorchServe's frontend and our server hand it;
- ``script``: ``model_fn(DIR)`` once, then ``input_fn(body, content_type)``, ``predict_fn``, ``output_fn``
  from ``DIR/code/inference.py`` per request, as SageMaker's inference toolkit calls them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    """What a TorchServe handler reads and writes of its context, for a batch of one."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1}
        self.manifest = {"model": {"modelName": "bench"}}
        self.status, self.content_type = 200, "application/json"

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = code


def handler_endpoint(model_dir: Path):
    handle = _module(model_dir / "torchserve_handler.py").handle

    async def predict(request: Request) -> Response:
        context = Context(model_dir)
        out = handle([{"body": json.loads(await request.body())}], context)
        return Response(out[0], status_code=context.status, media_type=context.content_type)

    handle([{"body": {"instances": []}}], Context(model_dir))  # loads and warms up the model (a 400 inside)
    return predict


def script_endpoint(model_dir: Path):
    script = _module(model_dir / "code" / "inference.py")
    model = script.model_fn(str(model_dir))

    async def predict(request: Request) -> Response:
        data = script.input_fn(await request.body(), request.headers.get("content-type", "application/json"))
        body, content_type = script.output_fn(script.predict_fn(data, model), request.headers.get("accept", "*/*"))
        return Response(body, media_type=content_type)

    return predict


def build_app(kind: str, model_dir: Path, threads: int) -> Starlette:
    torch.set_num_threads(threads)
    predict = handler_endpoint(model_dir) if kind == "handler" else script_endpoint(model_dir)

    async def ping(request: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[Route("/ping", ping, methods=["GET"]), Route("/predict", predict, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve_support.bare_kinds", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kind", choices=("handler", "script"), required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args(argv)
    app = build_app(args.kind, args.model_dir, args.threads)
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False, server_header=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
