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

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving import codec
from serving.batching import array_forward

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


class Runner(ABC):
    """The interface; a subclass implements at least :meth:`forward` (else it fails at construction)."""

    kind = "abstract"
    request_types: tuple[str, ...] | None = None
    """Content types accepted before the body is read (415 otherwise); None: the model's code decides."""
    image_input = False
    reads_headers = True
    """decode() gets the request headers (handlers and scripts see them); False spares the copy."""
    device = "cpu"
    max_batch_size = 1
    artifact: Artifact | None = None
    """The torch.export artifact a runner serves, if any: the Open Inference Protocol serves only those."""

    def check_accept(self, accept: str | None) -> None:
        """Raise NotAcceptable before the body is read, when the runner knows its response types."""
        return  # a runner whose code picks its response type decides later

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> Any:
        return Request(body, media_type, headers)

    def size(self, payload: Any) -> int:
        return 1

    @abstractmethod
    def forward(self, payloads: list[Any]) -> Sequence[Any]:
        """One result (or exception, failing only its own request) per payload, in order."""

    def encode(self, result: Any, accept: str | None) -> Reply:
        return result

    def warm_up(self) -> None:
        """One forward pass before /ping says ready, where the runner can make an input."""
        return  # a runner that cannot make an input warms up on its first request

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "device": self.device}


class NativeRunner(Runner):
    """A torch.export artifact: tensors in, logits out; requests concatenated into one forward pass."""

    kind = "torch.export"
    reads_headers = False

    artifact: Artifact

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._batched = array_forward(self._predict, split=codec.Prediction.split)
        self.request_types = codec.request_types(artifact)
        self.image_input = codec.image_mode(artifact) is not None
        self.device = artifact.device
        self.max_batch_size = artifact.max_batch_size

    def check_accept(self, accept: str | None) -> None:
        codec.response_type(accept)

    def decode(self, body: bytes, media_type: str, headers: Mapping[str, str]) -> np.ndarray:
        return codec.decode(body, media_type, self.artifact)

    def size(self, payload: np.ndarray) -> int:
        return len(payload)

    def _predict(self, batch: np.ndarray) -> codec.Prediction:
        return codec.postprocess(predict(self.artifact, batch))

    def forward(self, payloads: list[np.ndarray]) -> Sequence[codec.Prediction]:
        return self._batched(payloads)  # one pass over the concatenated requests, split back per request

    def encode(self, result: codec.Prediction, accept: str | None) -> Reply:
        media_type = codec.response_type(accept)
        return Reply(codec.encode(self.artifact, result, media_type), media_type)

    def warm_up(self) -> None:
        predict(self.artifact, np.zeros((1, *self.artifact.input_shape), dtype=np.float32))

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


def predict(artifact: Artifact, batch: np.ndarray) -> np.ndarray:
    """Logits for a validated batch. Runs on the inference thread, never on the event loop."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(batch)
        if artifact.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if artifact.device != "cpu":
            x = x.to(artifact.device, non_blocking=True)
        return artifact.module(x).float().cpu().numpy()
