"""Ray Serve peer of `make bench-serve`: the artifact as a ``@serve.deployment``, with ``@serve.batch`` for the cnn.

::

    .venv-peers/rayserve/bin/python bench/serve_support/peer_rayserve.py --model-dir DIR --port P --threads T \
        --temp-dir SCRATCH [--max-batch-size 16 --batch-wait-ms 10]

As Ray Serve's docs deploy an application from Python: ``ray.init`` starts a local Ray cluster (the
dashboard off, ``include_dashboard=False``; its session dir and sockets under ``--temp-dir``, which the bench
removes), ``serve.start(http_options={"host": "127.0.0.1", "port": P})`` puts Serve's HTTP proxy on
loopback, and ``serve.run`` deploys one replica (``num_replicas=1``) of a class whose ``__call__`` takes the
Starlette request on ``POST /predict`` (the workload's body unchanged) and answers ``{"predictions": [...]}``.
Every Ray process (GCS, raylet, its agents, the Serve controller, proxy and replica workers) is a descendant
of this one and stays in the session the bench started; on SIGTERM this process shuts Serve and Ray down.

Batching is Ray Serve's own: ``@serve.batch(max_batch_size=B, batch_wait_timeout_s=S)`` on an async method
that takes the list of queued requests' arrays, one forward over all of them, and returns one result per
request; with ``max_ongoing_requests`` 2·B, so that a full batch can queue at the replica while one runs
(at Ray's default of 5 no batch could grow past 5). Without the flags (the mlp): ``@serve.deployment`` at its
defaults and no batching. The checks, forward and rounding are peer_common.py's (the replica imports it: the
bench puts serve_support/ on PYTHONPATH, which Ray's workers inherit).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_app(model_dir: str, threads: int, max_batch_size: int | None, batch_wait_ms: float):
    """The Serve application: one replica; ``@serve.batch`` when ``max_batch_size`` is given."""
    import numpy as np
    from peer_common import Model
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    options: dict = {"num_replicas": 1}
    if max_batch_size:
        options["max_ongoing_requests"] = 2 * max_batch_size

    @serve.deployment(**options)
    class BenchDeployment:
        def __init__(self) -> None:
            self.model = Model(model_dir, threads)

        async def __call__(self, request: Request):
            try:
                batch = self.model.decode(await request.body())
            except (ValueError, TypeError, KeyError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if max_batch_size:
                return {"predictions": await self.batched(batch)}
            return {"predictions": self.model.predictions(self.model.probabilities(batch))}

        @serve.batch(max_batch_size=max_batch_size or 1, batch_wait_timeout_s=batch_wait_ms / 1000)
        async def batched(self, batches: list[np.ndarray]) -> list:
            return self.model.predict_many(batches)

    return BenchDeployment.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--batch-wait-ms", type=float, default=0.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(include_dashboard=False, _temp_dir=args.temp_dir, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(
            build_app(args.model_dir, args.threads, args.max_batch_size, args.batch_wait_ms), route_prefix="/predict"
        )
        print(f"ray serve ready on 127.0.0.1:{args.port}/predict", flush=True)
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
