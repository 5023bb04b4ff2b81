"""`make predict`: send the held-out test images to the endpoint, one request each, and report
accuracy and latency next to the accuracy the trainer measured in-process on the same images."""

from __future__ import annotations

import csv
import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ops.errors import OpsError


@dataclass(frozen=True, slots=True)
class PredictReport:
    samples: int
    correct: int
    in_process_accuracy: float | None
    latencies_ms: list[float]
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples

    @property
    def matches(self) -> bool:
        # Same artifact, same images: the counts must agree exactly, not within a tolerance.
        return self.in_process_accuracy is not None and round(self.in_process_accuracy * self.samples) == self.correct

    def lines(self) -> list[str]:
        p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
        out = [f"accuracy over HTTP   {self.accuracy:.4f}  ({self.correct}/{self.samples})"]
        if self.in_process_accuracy is None:
            out.append("accuracy in-process  n/a (the artifact's manifest has no test metrics)")
        else:
            out.append(
                f"accuracy in-process  {self.in_process_accuracy:.4f}  (trainer, same artifact and images)"
                f"  {'match' if self.matches else 'MISMATCH'}"
            )
        worst = max(self.latencies_ms)
        out.append(f"latency ms           p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}  max {worst:.2f}")
        out.append(f"throughput           {self.samples / self.seconds:.0f} requests/s (1 connection, sequential)")
        return out


def read_test_set(channel: Path) -> tuple[list[np.ndarray], list[str]]:
    manifest = channel / "manifest.csv"
    if not manifest.exists():
        raise OpsError(f"no test set at {channel}: run `make data` first")
    images, labels = [], []
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            with Image.open(channel / row["file"]) as img:
                pixels = np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"), dtype=np.uint8)
            # The artifact takes channels first (docs/artifact.md): HxWxC -> CxHxW; grayscale stays HxW.
            images.append(pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels)
            labels.append(row["label"])
    return images, labels


def run_predictions(host: str, port: int, channel: Path, model_dir: Path, timeout: float = 60.0) -> PredictReport:
    images, labels = read_test_set(channel)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    in_process = manifest.get("metrics", {}).get("test", {}).get("accuracy")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)  # keep-alive across requests
    latencies, correct = [], 0
    started = time.perf_counter()
    try:
        for image, label in zip(images, labels, strict=True):
            body = json.dumps({"instances": [image.tolist()]}).encode()
            t0 = time.perf_counter()
            conn.request(
                "POST",
                "/invocations",
                body=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            response = conn.getresponse()
            payload = response.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                raise OpsError(f"endpoint answered {response.status}: {payload[:200].decode(errors='replace')}")
            correct += json.loads(payload)["predictions"][0]["label"] == label
    except OSError as exc:
        raise OpsError(f"cannot reach the endpoint at http://{host}:{port} ({exc}): run `make deploy`") from None
    finally:
        conn.close()
    return PredictReport(
        samples=len(labels),
        correct=correct,
        in_process_accuracy=in_process,
        latencies_ms=latencies,
        seconds=time.perf_counter() - started,
    )
