"""One served model, whatever its kind: how its requests are decoded, batched, run and encoded.

Three kinds share this interface (the routes and the batcher see nothing else):

- :class:`NativeRunner`: this project's artifact (docs/artifact.md), a ``torch.export`` program;
- ``serving.torchserve.HandlerRunner``: a TorchServe ``.mar`` archive, or a handler named by our manifest;
- ``serving.sagemaker.InferenceScriptRunner``: a SageMaker PyTorch ``code/inference.py`` artifact.

``decode`` runs on the event loop (or a worker thread for large bodies) and must be cheap and free of
user code; ``forward`` runs on the inference thread with a list of decoded requests and returns one
:class:`Reply` (or exception) per request; ``encode`` turns a result into bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving import predictor

if TYPE_CHECKING:
    from serving.artifact import Artifact


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished response body from model code (handlers and inference scripts encode their own)."""

    body: bytes
    media_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    """What handler-style models get: the raw body and its headers, decoded later by their own code."""

    body: bytes
    media_type: str
    headers: Mapping[str, str]

    @property
    def accept(self) -> str | None:
        return self.headers.get("accept")


class Runner:
    kind = "abstract"
    request_types: tuple[str, ...] | None = None
    """Content types accepted before the body is read (415 otherwise); None: the model's code decides."""
    image_input = False
    reads_headers = True
    """decode() gets the request headers (handlers and scripts see them); False spares the copy."""
    device = "cpu"
    max_batch_size = 1

    def check_accept(self, accept: str | None) -> None:
        """Raise NotAcceptable before the body is read, when the runner knows its response types."""

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> Any:
        return Request(body, media_type, headers)

    def size(self, payload: Any) -> int:
        return 1

    def forward(self, payloads: list[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def encode(self, result: Any, accept: str | None) -> Reply:
        return result

    def warm_up(self) -> None:
        """One forward pass before /ping says ready, where the runner can make an input."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "device": self.device}


class NativeRunner(Runner):
    """A torch.export artifact: tensors in, logits out; requests concatenated into one forward pass."""

    kind = "torch.export"
    reads_headers = False

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.request_types = predictor.request_types(artifact)
        self.image_input = predictor.image_mode(artifact) is not None
        self.device = artifact.device
        self.max_batch_size = artifact.max_batch_size

    def check_accept(self, accept: str | None) -> None:
        predictor.response_type(accept)

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> np.ndarray:
        return predictor.decode(body, media_type, self.artifact)

    def size(self, payload: np.ndarray) -> int:
        return len(payload)

    def forward(self, payloads: list[np.ndarray]) -> list[predictor.Prediction]:
        if len(payloads) == 1:
            return [predictor.postprocess(predictor.predict(self.artifact, payloads[0]))]
        outputs = predictor.postprocess(predictor.predict(self.artifact, np.concatenate(payloads)))
        return outputs.split([len(p) for p in payloads])

    def encode(self, result: predictor.Prediction, accept: str | None) -> Reply:
        media_type = predictor.response_type(accept)
        return Reply(predictor.encode(self.artifact, result, media_type), media_type)

    def warm_up(self) -> None:
        predictor.predict(self.artifact, np.zeros((1, *self.artifact.input_shape), dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        manifest = self.artifact.manifest
        return {
            "kind": self.kind,
            "device": self.device,
            "input": manifest.get("input"),
            "labels": len(self.artifact.labels),
            "max_batch_size": self.max_batch_size,
            "sha256": manifest["model"].get("sha256"),
            "metrics": manifest.get("metrics", {}),
            "layout": "channels_last" if self.artifact.channels_last else "contiguous",
            "fused_conv_relu": getattr(self.artifact.module, "fused", 0),
        }
