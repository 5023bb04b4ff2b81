"""LitServe peer of `make bench-serve`: the artifact behind ``litserve.LitServer``, as LitServe's docs deploy it.

::

    .venv-peers/litserve/bin/python bench/serve_support/peer_litserve.py --model-dir DIR --port P --threads T \
        [--max-batch-size 16 --batch-timeout-ms 10]

A ``LitAPI`` (``setup``, ``decode_request``, ``batch``, ``predict``, ``unbatch``, ``encode_response``) on
``POST /predict``, one inference worker on the CPU (``accelerator="cpu", devices=1, workers_per_device=1``)
and LitServe's default of one API server process per inference worker, ``server.run(host="127.0.0.1")``.
Batching is LitServe's own: ``LitAPI(max_batch_size=B, batch_timeout=S)`` gathers up to B requests or
waits S seconds; without the flags, LitServe's default (batch 1). The work per request is peer_common.py's.
No client file is written; logging at warning level.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import litserve as ls
from fastapi import HTTPException
from peer_common import Model


class BenchAPI(ls.LitAPI):
    def __init__(self, model_dir: str, threads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_dir, self.threads = model_dir, threads

    def setup(self, device) -> None:
        self.model = Model(self.model_dir, self.threads)

    def decode_request(self, request):
        try:
            return self.model.decode(request)
        except (ValueError, TypeError, KeyError) as exc:
            raise HTTPException(400, str(exc)) from None

    def batch(self, inputs):
        return list(inputs)  # requests may carry several instances: one concatenation in predict

    def predict(self, x):
        if isinstance(x, list):
            return self.model.predict_many(x)
        return self.model.predictions(self.model.probabilities(x))

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"predictions": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--batch-timeout-ms", type=float, default=None)
    args = parser.parse_args()
    batching = (
        {}
        if args.max_batch_size is None
        else {"max_batch_size": args.max_batch_size, "batch_timeout": (args.batch_timeout_ms or 0) / 1000}
    )
    api = BenchAPI(args.model_dir, args.threads, api_path="/predict", **batching)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
