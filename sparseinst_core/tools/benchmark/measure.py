"""How the benchmark measures: wall time on a synchronised device, the machine's matrix-multiply peak
(once per run and precision), FLOPs, the convolutions' share of the time, and batch-norm statistics that
make random weights behave like trained ones.

Only PyTorch and torchvision are imported here: a GPU machine that has nothing else can run it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ...inference.device import PRECISION_DTYPES

# Side of the square matrices of the peak measurement: reduced precisions run several times faster, so
# they get larger products for the same share of timer and launch overhead.
PEAK_MATRIX_SIZES = {"fp32": 2048, "fp16": 4096, "bf16": 4096}
PEAK_REPEATS = 10


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of `function()` in seconds over `repeats` calls, after `warmup` untimed ones.

    The minimum, not the median: on a machine shared with other work, interference only ever adds
    time, so the fastest call is the best estimate of the cost itself.
    """
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """The best rate (FLOP/s) of a square matrix product of side `size`: the machine's practical peak.

    The matrices come from a generator of their own: measuring leaves the global random state (and so
    the random weights built after it) as it was.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    with torch.inference_mode():
        seconds = time_call(lambda: torch.mm(a, b), device, repeats)
    return 2 * size ** 3 / seconds


def matmul_peaks(device: torch.device, precisions) -> dict[str, float]:
    """GFLOP/s of the matrix-multiply peak of each precision on `device`, each measured once."""
    return {precision: matmul_rate(device, PRECISION_DTYPES[precision], PEAK_MATRIX_SIZES[precision],
                                   PEAK_REPEATS) / 1e9
            for precision in dict.fromkeys(precisions)}


@dataclass
class FlopCount:
    """FLOPs (2 x multiply-accumulates) of one call: in total, in convolutions, and per operator."""
    total: int
    conv: int
    per_op: dict[str, int]


def _deform_conv_flops(input_shape, weight_shape, offset_shape, *args, out_shape=None, **kwargs) -> int:
    """2 x MACs of torchvision's deformable convolution (the bilinear sampling is not counted)."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def count_flops(module, *inputs) -> FlopCount:
    """FLOPs of one call `module(*inputs)`, counted by `FlopCounterMode` (deformable convolutions added)."""
    mapping = {torch.ops.torchvision.deform_conv2d: _deform_conv_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(*inputs)
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    conv = sum(n for op, n in per_op.items() if "conv" in op)
    return FlopCount(total=int(counter.get_total_flops()), conv=conv, per_op=per_op)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_time_share(function, device: torch.device) -> float:
    """Fraction of one call's wall time spent in convolution kernels (torch.profiler, CPU or CUDA)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    function()
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profile:
        function()
        synchronize(device)
    events = profile.key_averages()
    if device.type == "cuda":
        conv = sum(e.self_device_time_total for e in events if "conv" in e.key.lower()) / 1e6
        total = sum(e.self_device_time_total for e in events) / 1e6
        return conv / total if total else float("nan")
    # the mkldnn/deformable kernels: their CPU time, self time of the innermost convolution op
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower()) / 1e6
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    return conv / total if total else float("nan")


@torch.no_grad()
def calibrate_batch_norm(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Sets every batch norm's statistics to those of its own input on `images` (data-dependent init).

    With random weights and identity statistics, activations grow block after block in a deep ResNet:
    an unrealistic regime in which float rounding is amplified, so backends would disagree far more
    than on a trained model, whose batch norms keep activations normalised. Agreement is therefore
    measured on calibrated random weights. One forward pass; layers are calibrated in execution order,
    so each sees the already normalised output of the ones before it.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    def set_statistics(module, inputs):
        x = inputs[0].float()                                   # (B, C, H, W)
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
    try:
        model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    return model
