"""Training-loop pieces: data order, one training step, training checkpoints.

Everything that decides the trajectory of a run (weights, optimiser, schedule, grad scaler, RNG states and
the data order) is either in the checkpoint or a pure function of (seed, iteration), so a resumed run
continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..data.coco import collate_batch
from ..io import save_checkpoint
from .criterion import DEFAULT_WEIGHTS
from .distributed import any_across_ranks, gather_objects, get_rank, get_world_size

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------- data order
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the augmentations of dataset item `index` in `epoch`: independent of ranks and workers."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class TrainBatchSampler:
    """Endless per-rank batches of (dataset index, augmentation seed), starting at `start_iteration`.

    Epoch e is a DistributedSampler permutation seeded by (seed, e), split over the ranks; the last
    incomplete global batch is dropped. Batch i of a rank is therefore a function of (seed, i) only,
    which makes resuming exact and lets N processes with batch B see the same images as one process
    with batch N*B.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, start_iteration: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_iteration = start_iteration
        self.iters_per_epoch = dataset_size // (batch_size * self.world_size)
        if self.iters_per_epoch == 0:
            raise ValueError(f"the training set has {dataset_size} images, fewer than one global batch of "
                             f"{batch_size} x {self.world_size} processes; lower --batch-size")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = divmod(self.start_iteration, self.iters_per_epoch)
        while True:
            sampler = DistributedSampler(range(self.dataset_size), num_replicas=self.world_size,
                                         rank=self.rank, shuffle=True, seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            indices = list(sampler)
            for batch in range(skip, self.iters_per_epoch):
                chunk = indices[batch * self.batch_size:(batch + 1) * self.batch_size]
                yield [(index, sample_seed(self.seed, epoch, index)) for index in chunk]
            epoch, skip = epoch + 1, 0


class SeededItems(Dataset):
    """`dataset[index]` computed under RNGs seeded with the item's own seed; global RNG states are kept.

    Augmentations draw from torch's global generator; seeding it per item makes them reproducible no
    matter which worker loads the item or whether the run was resumed.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % 2**32)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class PadWithPixelMean:
    """`collate_batch` padding images with the pixel mean (zero once the model normalises), as the official
    model pads the *normalised* image with zeros. A class, so DataLoader workers can pickle it."""

    def __init__(self, pixel_mean: Sequence[float]):
        self.pixel_mean = tuple(float(v) for v in pixel_mean)

    def __call__(self, batch):
        return collate_batch(batch, pad_value=self.pixel_mean)


@contextlib.contextmanager
def loader_iterator(loader: torch.utils.data.DataLoader):
    """`iter(loader)` whose worker processes are shut down on leaving the block, however it is left.

    Workers ignore SIGTERM (see below), so they must be told to stop before the interpreter exits:
    multiprocessing's exit handler would otherwise terminate them with that very signal and wait forever.
    """
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)   # single-process iterators have none
        if shutdown is not None:
            shutdown()


def ignore_interrupts_in_worker(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which checkpoints before exiting."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------- one step
class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; raised on every rank before the weights are touched."""


@dataclass
class StepOutput:
    losses: dict[str, float]       # unweighted loss terms of this rank
    total: float                   # weighted sum
    grad_norm: float | None        # before clipping, when clipping is on


def autocast(device: torch.device, amp: str):
    """Mixed-precision context: "none", "fp16" (CUDA only) or "bf16"."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"unknown amp mode {amp!r}; expected 'none', 'fp16' or 'bf16'")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or none")
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def move_targets(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
            for t in targets]


def _stop_if_non_finite(iteration: int, outputs: dict[str, torch.Tensor] | None = None,
                        loss_values: dict[str, float] | None = None) -> None:
    """Raise NonFiniteLossError on every rank if any rank has NaN/inf network outputs or loss terms.

    Collective (one small all-reduce), so that all ranks stop at the same iteration. Outputs are
    checked before the criterion because the matcher cannot assign NaN scores.
    """
    if outputs is not None:
        bad = [name for name, value in outputs.items() if not torch.isfinite(value).all()]
        report = (f"network outputs {', '.join(bad)} contain NaN/inf, so every loss term "
                  f"({', '.join(DEFAULT_WEIGHTS)}) is undefined") if bad else None
    else:
        bad = [name for name, value in loss_values.items() if not math.isfinite(value)]
        report = ", ".join(f"{name}={value:.6g}" for name, value in loss_values.items()) if bad else None
    if not any_across_ranks(torch.tensor([report is not None]))[0]:
        return
    reports = [f"rank {rank}: {text}" for rank, text in enumerate(gather_objects(report)) if text is not None]
    raise NonFiniteLossError(
        f"non-finite loss at iteration {iteration} ({'; '.join(reports)}); training stopped before the "
        "update and the last checkpoint is intact. Try a lower --lr, --clip-grad, or --amp none.")


def train_one_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, images: torch.Tensor, targets: list[dict], *,
                   iteration: int, amp: str = "none", clip_grad: float = 0.0) -> StepOutput:
    """Forward, loss, NaN/inf guard, backward and optimiser step for one batch.

    images [B, 3, Hp, Wp] and targets (masks [K, Hp, Wp]) already on the model's device. The forward
    runs under autocast; the criterion computes in float32. With fp16 the GradScaler scales the loss
    (and skips steps whose gradients overflow); gradients are unscaled before clipping.
    """
    model.train()
    with autocast(images.device, amp):
        outputs = model(images)
    _stop_if_non_finite(iteration, outputs=outputs)
    losses = criterion(outputs, targets)
    total = criterion.total_loss(losses)
    values = {name: float(value.detach()) for name, value in {**losses, "total": total}.items()}   # read once
    _stop_if_non_finite(iteration, loss_values=values)

    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    grad_norm = None
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad))
    scaler.step(optimizer)
    scaler.update()
    return StepOutput({name: values[name] for name in losses}, values["total"], grad_norm)


# --------------------------------------------------------------------------------------- checkpoints
def capture_rng_state() -> dict:
    """This process's python, numpy and torch (CPU and CUDA) RNG states, as tensors and plain types."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             scheduler, scaler: torch.amp.GradScaler, iteration: int,
                             class_names: Sequence[str] | None = None, **extra) -> None:
    """Collective (every rank calls it): gathers each rank's RNG state; rank 0 writes atomically."""
    rng_states = gather_objects(capture_rng_state())
    if get_rank() == 0:
        save_checkpoint(model, path, class_names=class_names, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), iteration=iteration,
                        rng_states=rng_states, **extra)


def load_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                        scaler: torch.amp.GradScaler) -> dict:
    """Restore optimiser, scheduler, scaler, batch-norm step counters and this rank's RNG state.

    The weights themselves are loaded by `load_checkpoint` (which ignores the step counters).
    Returns the whole checkpoint dict (iteration, extra entries).
    """
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    missing = [k for k in ("optimizer", "scheduler", "scaler", "iteration", "rng_states") if k not in state]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint (it lacks {missing}); "
                         "use --weights to start from a model file")
    buffers = dict(getattr(model, "module", model).named_buffers())
    with torch.no_grad():
        for name, value in state["model"].items():
            if name.endswith("num_batches_tracked") and name in buffers:
                buffers[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rng_states = state["rng_states"]
    if len(rng_states) == get_world_size():
        restore_rng_state(rng_states[get_rank()])
    else:   # another process count: data order is still exact, per-process RNG streams cannot be
        restore_rng_state(rng_states[0])
    return state
