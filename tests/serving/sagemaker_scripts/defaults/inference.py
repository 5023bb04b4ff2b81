"""Only ``model_fn``: SageMaker's defaults read and write JSON, CSV and .npy."""

import os

import torch
from torch import nn


def model_fn(model_dir):
    net = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid())
    net.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return net.eval()
