"""Inference-time rewrites of a SparseInst network that change no result beyond float rounding.

- Batch-norm folding: in eval mode a (frozen) batch norm is a per-channel affine map, so it can be merged
  into the weights and bias of the convolution before it (plain, deep-stem, shortcut and deformable
  convolutions alike), which removes one full pass over every backbone feature map.
- Channels-last memory format: oneDNN's convolutions run natively in NHWC; keeping weights (and hence
  activations) channels-last avoids a layout reorder around every convolution on the CPU and lets cuDNN
  use tensor-core kernels on the GPU.
- Reduced precision: the whole network cast to bf16 (CPU) or fp16 (CUDA), with the input normalised and
  the outputs returned in fp32, or autocast (`precision_context`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import DeformConv2d
from torchvision.ops.misc import FrozenBatchNorm2d

from ..model.backbone import ResNet
from .device import check_precision

_CONVS = (nn.Conv2d, DeformConv2d)
_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, norm: nn.Module) -> None:
    """Merge an eval-mode `norm` (applied right after `conv`) into `conv`'s weight and bias, in place.

    norm(conv(x)) = scale * (W x + b - mean) + beta with scale = gamma / sqrt(var + eps), per output
    channel, which is a convolution with weight scale * W and bias scale * (b - mean) + beta.
    """
    if isinstance(norm, nn.BatchNorm2d) and (norm.training or norm.running_var is None):
        raise ValueError("only eval-mode batch norm with running statistics can be folded; call .eval()")
    weight = conv.weight.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(norm.running_var, dtype=torch.float64)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(gamma)
    scale = gamma * torch.rsqrt(norm.running_var.double() + norm.eps)          # (C_out,)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.copy_((weight * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    new_bias = ((bias - norm.running_mean.double()) * scale + beta).to(conv.weight.dtype)
    conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)


def _last_conv(module: nn.Module) -> nn.Module:
    """The convolution whose output a norm consumes: `module` itself or the last layer of a Sequential."""
    if isinstance(module, nn.Sequential):
        module = module[-1]
    if not isinstance(module, _CONVS):
        raise TypeError(f"cannot fold batch norm into {type(module).__name__}")
    return module


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution, in place; returns how many were folded.

    Pairs are taken from the structure: in a `nn.Sequential`, a norm right after a convolution; in the
    ResNet trunk and its residual blocks (whose forward computes bnK(convK(x))), `bnK` after `convK`
    (for the deep stem, after the stem's last convolution). Folded norms become `nn.Identity`.
    """
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for index in range(1, len(module)):
                if isinstance(module[index], _NORMS) and isinstance(module[index - 1], _CONVS):
                    fold_batch_norm(module[index - 1], module[index])
                    module[index] = nn.Identity()
                    folded += 1
        if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            for k in (1, 2, 3):
                norm = getattr(module, f"bn{k}", None)
                if isinstance(norm, _NORMS):
                    fold_batch_norm(_last_conv(getattr(module, f"conv{k}")), norm)
                    setattr(module, f"bn{k}", nn.Identity())
                    folded += 1
    return folded


class ReducedPrecisionModel(nn.Module):
    """Runs a SparseInst network cast to `dtype`; takes and returns float32 like the model it wraps.

    The input is normalised in float32 (the 0..255 scale would lose the pixel mean's fraction in bf16)
    and the outputs are cast back, so post-processing and callers see the usual fp32 tensors.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.config = model.config
        self.register_buffer("pixel_mean", model.pixel_mean.float().clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.float().clone(), persistent=False)
        self.backbone, self.encoder, self.decoder = (m.to(dtype) for m in (model.backbone, model.encoder, model.decoder))
        self.dtype = dtype

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, H, W) 0..255 -> normalised (B, 3, H, W) in `dtype`."""
        return ((images - self.pixel_mean) / self.pixel_std).to(self.dtype)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.decoder(self.encoder(self.backbone(self.normalize(images))))
        return {key: value.float() for key, value in outputs.items()}


def optimize_for_inference(model: nn.Module, channels_last: bool = True, precision: str = "fp32",
                           device: str | torch.device | None = None) -> nn.Module:
    """A new, inference-only module with the same outputs as `model` up to float rounding.

    `model` is left untouched. Batch norms are folded, parameters frozen, weights stored channels-last
    (`channels_last=True`), the network cast to `precision` ("fp32", "bf16" on CPU or CUDA, "fp16" on
    CUDA). The result still exposes `backbone`, `encoder`,
    `decoder` and `config`, so stage-wise timing works on it.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = check_precision(device, precision)
    optimized = copy.deepcopy(model).to(device).eval()
    fold_batch_norms(optimized)
    optimized.requires_grad_(False)
    if channels_last:
        optimized = optimized.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        optimized = ReducedPrecisionModel(optimized, dtype)
    return optimized
