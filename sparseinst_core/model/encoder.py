"""Instance context encoder: FPN laterals, pyramid pooling on C5, and fusion of P3-P5 at stride 8.

SparseInst has no multi-level heads; the encoder instead enlarges the receptive field (PPM) and folds all
scales into one stride-8 map so a single set of instance activation maps can see every object size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill as the official layers are initialised."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2's MSRAFill (He init, fan-out)."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class PyramidPoolingModule(nn.Module):
    """PSPNet pooling: average-pool to 1x1, 2x2, 3x3 and 6x6 grids, project, upsample, concatenate."""

    def __init__(self, in_channels: int, channels: int, sizes=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d((size, size)), nn.Conv2d(in_channels, channels, 1))
            for size in sizes)
        self.bottleneck = nn.Conv2d(in_channels + len(sizes) * channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [F.interpolate(F.relu(stage(x)), size=size, mode="bilinear", align_corners=False)
                  for stage in self.stages]
        return F.relu(self.bottleneck(torch.cat(priors + [x], dim=1)))   # (B, C, H/32, W/32)


class InstanceContextEncoder(nn.Module):
    """Maps {"res3", "res4", "res5"} to one (B, channels, H/8, W/8) feature map."""

    in_features = ("res3", "res4", "res5")

    def __init__(self, in_channels: dict[str, int], channels: int = 256):
        super().__init__()
        # Index 0 is the coarsest level (res5): the top-down pass starts there.
        coarse_to_fine = [in_channels[name] for name in reversed(self.in_features)]
        self.fpn_laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in coarse_to_fine)
        self.fpn_outputs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in coarse_to_fine)
        self.ppm = PyramidPoolingModule(channels, channels // 4)
        self.fusion = nn.Conv2d(channels * 3, channels, 1)
        for conv in [*self.fpn_laterals, *self.fpn_outputs]:
            c2_xavier_fill(conv)
        c2_msra_fill(self.fusion)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        res5, res4, res3 = (features[name] for name in reversed(self.in_features))
        top_down = self.ppm(self.fpn_laterals[0](res5))
        outputs = [self.fpn_outputs[0](top_down)]
        for feature, lateral, output in zip((res4, res3), self.fpn_laterals[1:], self.fpn_outputs[1:]):
            top_down = lateral(feature) + F.interpolate(top_down, scale_factor=2.0, mode="nearest")
            outputs.insert(0, output(top_down))
        p3, p4, p5 = outputs
        size = p3.shape[-2:]
        fused = [p3] + [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in (p4, p5)]
        return self.fusion(torch.cat(fused, dim=1))                     # (B, C, H/8, W/8)
