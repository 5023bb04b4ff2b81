"""``transform_fn`` instead of input/predict/output; no ``model_fn``: the default loads TorchScript ``model.pt``."""

import json

import torch
from helper import VALUE


def transform_fn(model, input_data, content_type, accept):
    values = json.loads(input_data)
    with torch.no_grad():
        outputs = model(torch.tensor(values, dtype=torch.float32)) + VALUE
    body = {"transformed": outputs.tolist(), "content_type": content_type, "accept": accept}
    return json.dumps(body), "application/vnd.deepcloud+json"
