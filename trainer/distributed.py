"""Process, device and distributed set-up, in one place so every entry point agrees on it.

One process (``python -m trainer``), ``torchrun --nproc_per_node G -m trainer`` on one node, or several
SageMaker hosts: when ``SM_HOSTS`` lists more than one host (or ``SM_NUM_GPUS`` > 1) and no launcher set
``WORLD_SIZE``, :func:`torchrun_command` builds the torchrun command the entry point re-executes itself
under, with the first host as the rendezvous, as SageMaker's own PyTorch toolkit does.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trainer.errors import ConfigError

RENDEZVOUS_PORT = 29500


@dataclass(frozen=True, slots=True)
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def visible_gpus(environ: dict[str, str] | None = None) -> int:
    """SM_NUM_GPUS when SageMaker sets it, else what torch sees."""
    env = os.environ if environ is None else environ
    return int(env["SM_NUM_GPUS"]) if env.get("SM_NUM_GPUS", "").isdigit() else torch.cuda.device_count()


def torchrun_command(hosts: tuple[str, ...], current_host: str, gpus: int,
                     environ: dict[str, str] | None = None) -> list[str] | None:
    """The torchrun re-launch for a multi-host or multi-GPU SageMaker job, or None when one process will do."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or (len(hosts) <= 1 and gpus <= 1):
        return None
    if current_host not in hosts:
        raise ConfigError(f"SM_CURRENT_HOST {current_host!r} is not in SM_HOSTS {list(hosts)}")
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(hosts)}",
            f"--node_rank={hosts.index(current_host)}", f"--nproc_per_node={max(1, gpus)}",
            f"--master_addr={hosts[0]}", f"--master_port={RENDEZVOUS_PORT}", "-m", "trainer", "train"]


def compute_init(device: str, seed: int, deterministic: bool) -> Runtime:
    """Join the process group when launched by torchrun, pick the device, seed every RNG per rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hyperparameter 'device' is 'cuda' but no CUDA device is visible: use auto or cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible: "
                              "launch at most one process per GPU")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    else:
        resolved = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    # Each rank its own stream (dropout masks differ per rank), reproducible from the seed.
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    if deterministic:
        # cuBLAS needs this workspace setting before its first call to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def compute_cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank when it is true on any rank (so all ranks stop at the same step)."""
    if not runtime.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)  # gloo reduces CPU tensors; nccl would need the device
    return bool(value.item())
