"""Process-group set-up for `torchrun` and the few collective helpers training needs.

One code path for every case: without torchrun (no WORLD_SIZE in the environment) the helpers behave as
a world of one process. NCCL serves CUDA devices and Gloo the CPU, each process owning one device.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..inference import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its global rank, the number of processes and the device it owns."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = "auto", timeout_s: float = 1800.0) -> DistributedContext:
    """Join the process group that torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, if any.

    `device` is "auto", "cpu", "cuda" or "cuda:N"; under torchrun a CUDA process takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    if device.type == "cuda" and world_size > 1:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                               "start at most one process per GPU")
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    return DistributedContext(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def any_across_ranks(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise logical OR of a small bool vector over all ranks (one all-reduce).

    Used every iteration so that every rank takes the same decision (stop on a signal, stop on a
    non-finite loss) at the same iteration instead of leaving the others waiting in a collective.
    """
    if not is_distributed():
        return flags
    values = flags.to(torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.bool()


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics (e.g. loss terms for logging) over all ranks."""
    if not is_distributed() or not values:
        return dict(values)
    names = sorted(values)
    stacked = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(names, stacked.tolist()))


def gather_objects(obj) -> list:
    """Every rank's `obj` in rank order (picklable objects, e.g. COCO result lists)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def setup_logger(output_dir: str | os.PathLike | None, rank: int, name: str = "sparseinst") -> logging.Logger:
    """A logger that prints and writes OUTPUT_DIR/log.txt on rank 0 and only reports warnings elsewhere."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = "" if rank == 0 else f"[rank {rank}] "
    formatter = logging.Formatter(f"%(asctime)s {prefix}%(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if rank == 0 and output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(output_dir) / "log.txt")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger
