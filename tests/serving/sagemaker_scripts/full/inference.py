"""A SageMaker PyTorch ``code/inference.py`` with all four functions.

``input_fn`` reads a content type of its own (``application/x-numbers``: numbers separated by spaces) as well as
JSON ``{"inputs": [4 numbers]}``; ``predict_fn`` fails on request (first input 999) for the error tests;
``output_fn`` returns ``(body, content_type)`` for ``text/plain`` and a bare JSON string otherwise.
"""

import json
import os

import torch
from helper import VALUE  # a sibling in code/: SageMaker puts code/ on sys.path
from torch import nn

NUMBERS = "application/x-numbers"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


def model_fn(model_dir):
    net = Net()
    net.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return net.eval()


def input_fn(input_data, content_type):
    if content_type == NUMBERS:
        values = [float(v) for v in bytes(input_data).decode("ascii").split()]
    elif content_type == "application/json":
        values = json.loads(input_data)["inputs"]
    else:
        raise ValueError(f"this model reads {NUMBERS} or application/json, not {content_type}")
    if len(values) != 4:
        raise ValueError(f"expected 4 numbers, got {len(values)}")
    return torch.tensor([values], dtype=torch.float32)


def predict_fn(data, model):
    if float(data[0, 0]) == 999:
        raise RuntimeError("predict_fn exploded")
    with torch.no_grad():
        return model(data) * VALUE


def output_fn(prediction, accept):
    values = prediction[0].tolist()
    if accept == "text/plain":
        return " ".join(f"{v:.5f}" for v in values), "text/plain"
    return json.dumps({"outputs": values, "accept": accept})
