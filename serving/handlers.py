"""Built-in TorchServe handler names this server runs without the ``ts`` package or torchvision.

- ``image_classifier``: TorchServe's ImageClassifier behaviour: an image (bytes) or a nested list per request,
  resized so the shorter side is 256, centre-cropped to 224, scaled to [0, 1] and normalised with ImageNet's
  mean and std; softmax, top 5, named through ``index_to_name.json`` when the archive has one.
- ``tensor``: a plain tensor handler: one instance per request, as JSON (a nested list, or
  ``{"instances": ...}``) or an ``.npy`` body; a batch of requests is stacked into one float32 forward pass,
  and each request gets its raw output as nested lists.

Both load the model as TorchServe's BaseHandler does, minus pickle: a TorchScript ``.pt``, an eager model
(``modelFile`` defining one ``nn.Module`` class, plus a state dict read with ``torch.load(weights_only=True)``),
or a ``torch.export`` ``.pt2``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import InvalidInput
from serving.images import open_image
from serving.usercode import import_model_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(model_dir: Path, manifest: dict[str, Any], device: str):
    import torch
    from torch import nn

    model = manifest.get("model", {})
    serialized = model.get("serializedFile")
    path = model_dir / serialized if serialized else None
    if model.get("modelFile"):
        module = import_model_file(model_dir / model["modelFile"], f"deepcloud_model_{id(manifest)}")
        classes = [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise ValueError(f"{model['modelFile']} must define exactly one nn.Module class, found {len(classes)}")
        net = classes[0]()
        if path is not None:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.to(device).eval()
    if path is None or not path.is_file():
        raise ValueError(f"the archive has no serialized model file ({serialized!r})")
    if path.suffix == ".pt2":  # the strict reader, always: a .mar that needs more ships its own handler (code)
        from serving.artifact import load_model_file

        return load_model_file(path).to(device)
    return torch.jit.load(path, map_location=device).eval()


class _Handler:
    """initialize / preprocess / inference / postprocess / handle, as TorchServe's BaseHandler shapes them."""

    def __init__(self) -> None:
        self.initialized = False
        self.model: Callable[..., Any] | None = None
        self.mapping: dict[str, str] | None = None
        self.device = "cpu"
        self.context = None

    def initialize(self, context) -> None:
        properties = context.system_properties
        gpu = properties.get("gpu_id")
        self.device = f"cuda:{gpu}" if gpu is not None else "cpu"
        model_dir = Path(properties["model_dir"])
        self.model = load_model(model_dir, context.manifest, self.device)
        names = model_dir / "index_to_name.json"
        if names.is_file():
            self.mapping = json.loads(names.read_text())
        self.initialized = True

    def inference(self, data):
        import torch

        if self.model is None:
            raise RuntimeError("the handler is not initialized: initialize(context) loads its model")
        with torch.inference_mode():
            return self.model(data.to(self.device))

    def handle(self, data: list[dict[str, Any]], context) -> list[Any]:
        self.context = context
        return self.postprocess(self.inference(self.preprocess(data)))

    def preprocess(self, data):
        raise NotImplementedError

    def postprocess(self, data):
        raise NotImplementedError


def _body(row: dict[str, Any]) -> Any:
    value = row.get("data")
    return row.get("body") if value is None else value


class ImageClassifier(_Handler):
    topk = 5

    def preprocess(self, data):
        import torch

        images = []
        for row in data:
            value = _body(row)
            if isinstance(value, str):  # TorchServe's VisionHandler takes base64 text too
                try:
                    value = base64.b64decode(value, validate=True)
                except binascii.Error:
                    raise InvalidInput("a text body must be a base64-encoded image") from None
            if isinstance(value, (bytes, bytearray)):
                with open_image(bytes(value)) as image:  # its size checked before any pixel is decoded
                    images.append(torch.from_numpy(self._transform(image.convert("RGB"))))
            else:
                images.append(torch.tensor(value, dtype=torch.float32))
        return torch.stack(images)

    @staticmethod
    def _transform(image) -> np.ndarray:
        """torchvision's Resize(256), CenterCrop(224), ToTensor(), Normalize(ImageNet) on a PIL image."""
        from PIL import Image

        width, height = image.size
        size = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = round((size[0] - 224) / 2.0), round((size[1] - 224) / 2.0)
        image = image.crop((left, top, left + 224, top + 224))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
        std = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]
        return ((array - mean) / std).astype(np.float32)

    def postprocess(self, data):
        import torch

        probs = torch.softmax(data, dim=1)
        top, classes = torch.topk(probs, min(self.topk, probs.shape[1]), dim=1)
        mapping = self.mapping
        return [
            {(mapping[str(c)] if mapping else str(c)): p for c, p in zip(row_c, row_p, strict=True)}
            for row_c, row_p in zip(classes.tolist(), top.tolist(), strict=True)
        ]


class TensorHandler(_Handler):
    def preprocess(self, data):
        import torch

        rows = []
        for row in data:
            value = _body(row)
            if isinstance(value, (bytes, bytearray)):
                try:
                    array = np.load(io.BytesIO(bytes(value)), allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:
                    raise InvalidInput(f"body is neither JSON nor a readable .npy array ({exc})") from None
            else:
                if isinstance(value, dict):
                    value = value.get("instances")
                array = np.asarray(value, dtype=np.float32)
            if array.dtype.kind not in "biuf" or array.size == 0:
                raise InvalidInput("input must be a non-empty numeric array")
            rows.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
        shapes = {tuple(r.shape) for r in rows}
        if len(shapes) == 1:
            return torch.stack(rows)
        raise InvalidInput(f"requests in one batch have different shapes {sorted(shapes)}: send one shape")

    def postprocess(self, data):
        return data.float().cpu().tolist()


BUILT_INS: dict[str, type] = {"image_classifier": ImageClassifier, "tensor": TensorHandler}
