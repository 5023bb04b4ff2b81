"""A handler class subclassing TorchServe's own ``BaseHandler``, for an eager model (model.py + state dict).

``BaseHandler.initialize`` loads the model (``--model-file model.py --serialized-file weights.pt``); this
class overrides ``preprocess`` (JSON ``{"inputs": [4 numbers]}`` per request), ``inference`` (to fail on
request, for the error tests) and ``postprocess`` (softmax and argmax per request).
"""

import json

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException


class EagerHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            body = row.get("data")
            if body is None:
                body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            values = body["inputs"]
            if len(values) != 4:
                raise ValueError(f"expected 4 inputs, got {len(values)}")
            rows.append([float(v) for v in values])
        return torch.tensor(rows, dtype=torch.float32)

    def inference(self, data, *args, **kwargs):
        failure = self.context.get_request_header(0, "x-fail")
        if failure == "inference":
            raise RuntimeError("boom in inference")
        if failure == "teapot":
            raise PredictionException("I am a teapot", 418)
        return super().inference(data, *args, **kwargs)

    def postprocess(self, data):
        probabilities = torch.softmax(data, dim=1)
        return [{"probabilities": p.tolist(), "class": int(p.argmax())} for p in probabilities]
