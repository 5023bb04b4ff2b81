"""BentoML peer of `make bench-serve`: the artifact as a ``@bentoml.service``, served the way BentoML's docs serve one.

::

    .venv-peers/bentoml/bin/python bench/serve_support/peer_bentoml.py --host 127.0.0.1 --port P \
        --arg model_dir=DIR --arg threads=T [--arg max_batch_size=16 --arg max_latency_ms=MS]

runs ``bentoml serve peer_bentoml:BenchService --working-dir bench/serve_support ARGS...`` (BentoML's own CLI,
in this process) with one change: its process manager (circus) calls ``os.setsid()`` in every worker it
forks, which would take the worker out of the session the bench starts, counts (peak RSS) and stops; here
``os.setsid`` is a no-op, so the worker stays in the server's session and dies with it.

A class with ``@bentoml.service`` (one worker, BentoML's default; its Prometheus metrics off) whose
``predict`` method is ``@bentoml.api``, on ``POST /predict``. The request body is BentoML's JSON of the
method's arguments, ``{"instances": [...]}``: the workload's body unchanged. Each request's instances are
checked on arrival (a pydantic ``AfterValidator`` on the argument, so a bad request is a 400 of its own and
never fails a batch). Its answer is the list of predictions (one per instance), which the bench wraps as
``{"predictions": [...]}`` before the check.

Batching is BentoML's own adaptive batching, for the cnn: ``@bentoml.api(batchable=True,
max_batch_size=B, max_latency_ms=MS)``. BentoML concatenates the queued requests' arrays along dimension 0,
calls ``predict`` once, and splits the list it returns back per request. BentoML has no batch-wait setting:
its dispatcher learns how long to wait from the measured forward times, and ``max_latency_ms`` is a deadline
past which a queued request is answered 503; the bench passes its client's timeout. Without the batch
arguments (the mlp): ``@bentoml.api`` at its defaults, one request per call. Bento arguments (``--arg``, read
with ``bentoml.use_arguments()``) carry the settings. The checks, forward and rounding are peer_common.py's.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bentoml
import numpy as np
from peer_common import Model
from pydantic import AfterValidator

ARGS = bentoml.use_arguments()  # empty when this file runs as the launcher (main below)
MODEL_DIR = str(getattr(ARGS, "model_dir", ""))
THREADS = int(getattr(ARGS, "threads", 1))
MAX_BATCH = int(getattr(ARGS, "max_batch_size", 0) or 0)
MAX_LATENCY_MS = int(getattr(ARGS, "max_latency_ms", 0) or 0)
LOADED: list[Model] = []
"""The worker's model, set by BenchService.__init__: the argument validator checks requests against it."""


def _checked(value: Any) -> np.ndarray:
    if not LOADED:
        raise ValueError("the model is not loaded yet")
    return LOADED[0].decode(value)


Instances = Annotated[list, AfterValidator(_checked)]
"""``instances`` as JSON gives it, checked and turned into a float32 batch before the method (or the batch) sees it."""

api = (
    bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS) if MAX_BATCH else bentoml.api()
)


@bentoml.service(workers=1, metrics={"enabled": False})
class BenchService:
    def __init__(self) -> None:
        self.model = Model(MODEL_DIR, THREADS)
        LOADED[:] = [self.model]

    @api
    def predict(self, instances: Instances) -> list:
        batch = np.asarray(instances, dtype=np.float32)  # batchable: every queued request's, concatenated
        return self.model.predictions(self.model.probabilities(batch))


def main() -> None:
    from bentoml_cli.cli import cli

    os.setsid = lambda: None  # circus's preexec_fn looks it up in the forked child: the worker keeps our session
    sys.argv = [
        "bentoml",
        "serve",
        "peer_bentoml:BenchService",
        "--working-dir",
        os.path.dirname(os.path.abspath(__file__)),
        *sys.argv[1:],
    ]
    sys.exit(cli())


if __name__ == "__main__":
    main()
