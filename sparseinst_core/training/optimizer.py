"""The official optimiser and learning-rate schedule (detectron2 configs of SparseInst).

AdamW (lr 5e-5, weight decay 0.05, none on normalisation parameters), linear warm-up from 0.001 x lr,
then x0.1 at 7/9 and 25/27 of the iterations.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# Official schedule: 270k iterations, decays at 210k and 250k, 1000 warm-up iterations from 0.001 x lr.
OFFICIAL_MAX_ITERS = 270_000
OFFICIAL_STEPS = (210_000, 250_000)
OFFICIAL_WARMUP_ITERS = 1000
WARMUP_FACTOR = 0.001


def build_optimizer(model: nn.Module, lr: float = 5e-5, weight_decay: float = 0.05,
                    backbone_multiplier: float = 1.0) -> torch.optim.AdamW:
    """AdamW with no weight decay on normalisation parameters and `lr * backbone_multiplier` in the backbone."""
    model = getattr(model, "module", model)
    norm_params = {id(p) for module in model.modules()
                   if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                   for p in module.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (name.startswith("backbone."), id(param) in norm_params)
            groups.setdefault(key, []).append(param)
    param_groups = [{"params": params, "lr": lr * (backbone_multiplier if in_backbone else 1.0),
                     "weight_decay": 0.0 if is_norm else weight_decay}
                    for (in_backbone, is_norm), params in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)


def default_schedule(max_iters: int) -> tuple[int, tuple[int, int]]:
    """(warm-up iterations, decay steps) of the official schedule scaled to `max_iters`."""
    warmup = min(OFFICIAL_WARMUP_ITERS, max(1, round(max_iters * 0.05)))
    steps = tuple(round(max_iters * step / OFFICIAL_MAX_ITERS) for step in OFFICIAL_STEPS)
    return warmup, steps


def lr_multiplier(iteration: int, warmup_iters: int, steps: Sequence[int], gamma: float = 0.1,
                  warmup_factor: float = WARMUP_FACTOR) -> float:
    """Factor on the base lr at 0-based `iteration`: linear warm-up, then x gamma at each step passed."""
    factor = gamma ** sum(iteration >= step for step in steps)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, max_iters: int, warmup_iters: int | None = None,
                    steps: Sequence[int] | None = None, gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration warm-up + step decay (call `scheduler.step()` after every optimiser step)."""
    default_warmup, default_steps = default_schedule(max_iters)
    warmup_iters = default_warmup if warmup_iters is None else warmup_iters
    steps = tuple(default_steps if steps is None else steps)
    if warmup_iters < 0 or any(s < 0 for s in steps):
        raise ValueError(f"warm-up iterations and steps must be >= 0, got {warmup_iters}, {steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_multiplier(it, warmup_iters, steps, gamma))
