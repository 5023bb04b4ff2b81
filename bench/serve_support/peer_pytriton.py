"""Triton peer of `make bench-serve`: the artifact as a Python model of Triton Inference Server via ``nvidia-pytriton``.

::

    .venv-peers/pytriton/bin/python bench/serve_support/peer_pytriton.py --model-dir DIR --name cnn \
        --http-port P --grpc-port G --threads T --workspace /tmp/W [--max-batch-size 16 --max-queue-delay-ms 10]

As PyTriton's docs deploy a model: ``Triton(config=TritonConfig(...))``, ``triton.bind(model_name, infer_func,
inputs, outputs, config=ModelConfig(...))``, ``triton.serve()``. Triton's own dynamic batcher gathers the
requests: ``ModelConfig(max_batch_size=B, batcher=DynamicBatcher(max_queue_delay_microseconds=MS * 1000))``;
without the flags, PyTriton's defaults (``ModelConfig()``: batching on, max batch 4, no queue delay).
Clients speak Triton's protocol (KServe v2, ``POST /v2/models/NAME/infer``): one input ``x`` (FP32, the
artifact's input shape, batch first) and three outputs per instance: ``probabilities`` (FP32 [10]),
``index`` (INT64 [1]) and ``label`` (BYTES [1]). The infer function gets every request of the batch Triton
formed, checks each as peer_common.py does, runs one forward over all of them and splits the results back.
HTTP and gRPC listen on 127.0.0.1 only; the metrics endpoint is off. Triton's server binary and the
Python model stub are child processes of this one, in its session.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from peer_common import Model
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--workspace", required=True, help="PyTriton's workspace: sockets, model store (short path)")
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--max-queue-delay-ms", type=float, default=None)
    args = parser.parse_args()
    model = Model(args.model_dir, args.threads)

    def infer(requests):
        batches = [model.check(np.asarray(request["x"], dtype=np.float64)) for request in requests]
        probs = model.probabilities(np.concatenate(batches))
        out, start = [], 0
        for batch in batches:
            rows = probs[start : start + len(batch)]
            start += len(batch)
            index = rows.argmax(axis=1)
            out.append(
                {
                    "probabilities": np.round(rows, 6).astype(np.float32),
                    "index": index.astype(np.int64)[:, None],
                    "label": np.array([[model.labels[i].encode()] for i in index], dtype=np.bytes_),
                }
            )
        return out

    if args.max_batch_size is None:
        config = ModelConfig()
    else:
        config = ModelConfig(
            max_batch_size=args.max_batch_size,
            batcher=DynamicBatcher(max_queue_delay_microseconds=int((args.max_queue_delay_ms or 0) * 1000)),
        )
    triton_config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        allow_metrics=False,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
        log_verbose=0,
    )
    with Triton(config=triton_config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=model.shape)],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(len(model.labels),)),
                Tensor(name="index", dtype=np.int64, shape=(1,)),
                Tensor(name="label", dtype=bytes, shape=(1,)),
            ],
            config=config,
            strict=True,
        )
        print(
            f"serving {args.name}: max_batch_size {config.max_batch_size}, max_queue_delay_microseconds "
            f"{config.batcher.max_queue_delay_microseconds}",
            flush=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
