"""Where and in which precision the network runs: device resolution and precision checks."""
from __future__ import annotations

import contextlib

import torch

from .defaults import DEVICES, PRECISIONS

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) picks CUDA when available, else the CPU; 'cuda' without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unsupported device {device!r}; expected one of {', '.join(DEVICES)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available to PyTorch; "
                           "use device='auto' to fall back to the CPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device}; expected one of {', '.join(DEVICES)}")
    return device


def check_precision(device: torch.device, precision: str) -> torch.dtype:
    """The dtype for `precision` on `device`, or a ValueError naming a combination that cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; on the CPU use bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use fp16")
    return PRECISION_DTYPES[precision]


def precision_context(device: torch.device, precision: str):
    """Autocast to `precision` on `device` (a no-op for fp32)."""
    dtype = check_precision(device, precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class HostToDevice:
    """Moves float32 image batches to `device`; from the CPU to a GPU through a reused pinned buffer.

    A pageable tensor's `.to("cuda")` blocks the host while the driver stages it through a pinned buffer
    of its own. Copied into page-locked memory first, the batch goes to the GPU by DMA with
    `non_blocking=True`, queued before the network's kernels on the same stream. The buffer is kept while
    the shape stays the same; before it is overwritten, an event waits for the previous copy out of it.
    Tensors already on `device`, and every tensor when `device` is the CPU, are only cast to float32.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.buffer: torch.Tensor | None = None      # pinned (B, 3, H, W) float32
        self.copied = None                           # torch.cuda.Event recorded after the last copy

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda" or images.device.type != "cpu":
            return images.to(self.device, torch.float32)
        if self.buffer is None or self.buffer.shape != images.shape:
            self.buffer = torch.empty(images.shape, dtype=torch.float32, pin_memory=True)
        elif self.copied is not None:
            self.copied.synchronize()
        self.buffer.copy_(images)
        on_device = self.buffer.to(self.device, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record(torch.cuda.current_stream(self.device))
        return on_device
