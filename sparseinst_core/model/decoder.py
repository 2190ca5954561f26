"""IAM decoder: instance activation maps pool per-instance features; a mask branch gives mask features.

For each of N queries the instance branch predicts an activation map over the stride-8 features; the
normalised map is a weighted average pool that yields one feature vector per instance, from which class
logits, an objectness logit and a mask kernel are predicted. Masks are kernel . mask-features, so the
whole decoder is a few convolutions and matrix products: no RoI ops, no NMS.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import c2_msra_fill, c2_xavier_fill

_PRIOR_PROB = 0.01  # focal-loss prior: initial class and activation probabilities


def _init_prior(module: nn.Module) -> None:
    """Small weights and the focal-loss prior bias: every output starts at probability _PRIOR_PROB."""
    nn.init.normal_(module.weight, std=0.01)
    nn.init.constant_(module.bias, -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB))


def conv3x3_stack(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """[conv3x3, ReLU] x num_convs (index 2k is the k-th conv, matching the official layout)."""
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
        in_channels = out_channels
    return nn.Sequential(*layers)


def coordinate_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) normalised (x, y) coordinates in [-1, 1], concatenated before both branches."""
    h, w = x.shape[-2:]
    y_loc = -1.0 + 2.0 * torch.arange(h, device=x.device, dtype=torch.float32) / (h - 1)
    x_loc = -1.0 + 2.0 * torch.arange(w, device=x.device, dtype=torch.float32) / (w - 1)
    y_loc, x_loc = torch.meshgrid(y_loc, x_loc, indexing="ij")
    locations = torch.stack([x_loc, y_loc]).to(x.dtype)                  # (2, H, W)
    return locations.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class InstanceBranch(nn.Module):
    """Predicts instance activation maps and, from the features they pool, class/objectness/kernel.

    groups == 1: IAM (one sigmoid map per query). groups > 1: Group-IAM, where a grouped 3x3 conv
    predicts `groups` maps per query, each pooling a different part of the object; their features are
    concatenated and mixed by a linear layer. softmax=True normalises maps with a spatial softmax
    (plus a learned bias) instead of sigmoid + sum normalisation.
    """

    def __init__(self, in_channels: int, dim: int, num_convs: int, num_masks: int, num_classes: int,
                 kernel_dim: int, groups: int = 1, softmax: bool = False):
        super().__init__()
        if softmax and groups == 1:
            raise ValueError("the softmax IAM variant is defined for group IAM only")
        self.num_masks = num_masks
        self.groups = groups
        self.softmax = softmax
        self.inst_convs = conv3x3_stack(num_convs, in_channels, dim)
        self.iam_conv = nn.Conv2d(dim, num_masks * groups, 3, padding=1, groups=groups)
        inst_dim = dim * groups
        if groups > 1:
            self.fc = nn.Linear(inst_dim, inst_dim)
        self.cls_score = nn.Linear(inst_dim, num_classes)
        self.mask_kernel = nn.Linear(inst_dim, kernel_dim)
        self.objectness = nn.Linear(inst_dim, 1)
        if softmax:
            self.softmax_bias = nn.Parameter(torch.ones(1))
        self._init_weights()

    def _init_weights(self):
        for module in self.inst_convs:
            if isinstance(module, nn.Conv2d):
                c2_msra_fill(module)
        for module in (self.iam_conv, self.cls_score):
            _init_prior(module)
        nn.init.normal_(self.mask_kernel.weight, std=0.01)
        nn.init.zeros_(self.mask_kernel.bias)
        if self.groups > 1:
            c2_xavier_fill(self.fc)

    def reset_class_head(self) -> None:
        """Fresh class scores (as at construction), for fine-tuning on other classes."""
        _init_prior(self.cls_score)

    def forward(self, features: torch.Tensor):
        features = self.inst_convs(features)                              # (B, C, H, W)
        iam = self.iam_conv(features)                                     # (B, G*N, H, W)
        B, C = features.shape[:2]
        maps = iam.flatten(2)                                             # (B, G*N, HW)
        pixels = features.flatten(2).transpose(1, 2)                     # (B, HW, C)
        if self.softmax:
            inst_features = torch.bmm(F.softmax(maps + self.softmax_bias, dim=-1), pixels)
        else:
            prob = maps.sigmoid()
            inst_features = torch.bmm(prob, pixels) / prob.sum(-1, keepdim=True).clamp(min=1e-6)
        # (B, G*N, C): channel g*N + q is group g of query q; gather the groups of each query.
        if self.groups > 1:
            inst_features = (inst_features.reshape(B, self.groups, self.num_masks, C)
                             .transpose(1, 2).reshape(B, self.num_masks, self.groups * C))
            inst_features = F.relu(self.fc(inst_features))              # (B, N, G*C)
        return (self.cls_score(inst_features),                            # (B, N, num_classes)
                self.mask_kernel(inst_features),                          # (B, N, kernel_dim)
                self.objectness(inst_features),                           # (B, N, 1)
                iam)


class MaskBranch(nn.Module):
    """Convs to mask features of `kernel_dim` channels at stride 8."""

    def __init__(self, in_channels: int, dim: int, num_convs: int, kernel_dim: int):
        super().__init__()
        self.mask_convs = conv3x3_stack(num_convs, in_channels, dim)
        self.projection = nn.Conv2d(dim, kernel_dim, 1)
        for module in [*self.mask_convs, self.projection]:
            if isinstance(module, nn.Conv2d):
                c2_msra_fill(module)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.mask_convs(features))                # (B, D, H, W)


class IAMDecoder(nn.Module):
    """Encoder features (B, C, H/8, W/8) -> {"pred_logits", "pred_scores", "pred_masks" (H/4, W/4)}."""

    def __init__(self, in_channels: int, num_classes: int, num_masks: int = 100, kernel_dim: int = 128,
                 inst_dim: int = 256, inst_convs: int = 4, mask_dim: int = 256, mask_convs: int = 4,
                 groups: int = 1, softmax: bool = False, scale_factor: float = 2.0):
        super().__init__()
        self.scale_factor = scale_factor
        in_channels += 2  # coordinate features
        self.inst_branch = InstanceBranch(in_channels, inst_dim, inst_convs, num_masks, num_classes,
                                          kernel_dim, groups=groups, softmax=softmax)
        self.mask_branch = MaskBranch(in_channels, mask_dim, mask_convs, kernel_dim)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.cat([coordinate_features(features), features], dim=1)
        pred_logits, pred_kernel, pred_scores, _ = self.inst_branch(features)
        mask_features = self.mask_branch(features)                        # (B, D, H, W)
        B, D, H, W = mask_features.shape
        pred_masks = torch.bmm(pred_kernel, mask_features.view(B, D, H * W)).view(B, -1, H, W)
        pred_masks = F.interpolate(pred_masks, scale_factor=self.scale_factor, mode="bilinear",
                                   align_corners=False)                   # (B, N, 2H, 2W)
        return {"pred_logits": pred_logits, "pred_scores": pred_scores, "pred_masks": pred_masks}
