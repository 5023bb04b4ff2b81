"""MLServer peer of `make bench-serve`: the artifact as a custom MLServer runtime, with MLServer's adaptive batching.

::

    .venv-peers/mlserver/bin/mlserver start DIR      # DIR: settings.json and NAME/model-settings.json

As MLServer's docs deploy a custom runtime: a subclass of ``mlserver.MLModel`` (``load``, ``predict``) named by
``implementation`` in ``model-settings.json``, its ``parameters.uri`` the artifact directory and
``parameters.extra.threads`` the torch thread count; ``mlserver start``, with MLServer's default of one
parallel inference worker process. Adaptive batching is MLServer's own: ``max_batch_size`` and
``max_batch_time`` (seconds) in ``model-settings.json`` (the bench writes them for the cnn; for the mlp it
leaves MLServer's defaults, no batching). MLServer merges the queued requests into one ``InferenceRequest``
along the first dimension and splits the response back per request. Clients speak the Open Inference
Protocol (``POST /v2/models/NAME/infer``): input ``x`` (FP32, batch first), outputs ``probabilities`` (FP32),
``index`` (INT64 [1]) and ``label`` (BYTES [1]), as the Triton peer. The checks, forward and rounding are
peer_common.py's (bench/peers.py puts serve_support/ on PYTHONPATH for the runtime to import both).
settings.json binds HTTP and gRPC to 127.0.0.1 and turns the metrics server off (``metrics_endpoint: null``).
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from peer_common import Model


class BenchModel(MLModel):
    async def load(self) -> bool:
        parameters = self.settings.parameters
        self.model = Model(parameters.uri, int(parameters.extra["threads"]))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = self.model.check(NumpyCodec.decode_input(payload.inputs[0]).astype(np.float64))
        probs = self.model.probabilities(batch)
        index = probs.argmax(axis=1)
        rows = len(batch)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(
                    name="probabilities",
                    datatype="FP32",
                    shape=list(probs.shape),
                    data=[round(float(p), 6) for p in probs.ravel()],
                ),
                ResponseOutput(name="index", datatype="INT64", shape=[rows, 1], data=[int(i) for i in index]),
                ResponseOutput(
                    name="label", datatype="BYTES", shape=[rows, 1], data=[self.model.labels[i] for i in index]
                ),
            ],
        )
