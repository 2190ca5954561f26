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
