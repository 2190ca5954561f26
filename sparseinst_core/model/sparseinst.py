"""SparseInst: backbone -> instance context encoder -> IAM decoder, with input normalisation inside."""
from __future__ import annotations

import torch
from torch import nn

from .backbone import ResNet
from .decoder import IAMDecoder
from .encoder import InstanceContextEncoder
from .input_size import SIZE_DIVISIBILITY
from .presets import ModelConfig, get_preset


class SparseInst(nn.Module):
    """Takes float32 images (B, 3, H, W), RGB 0..255, H and W multiples of 32.

    Returns the raw decoder tensors (no thresholding, sorting or NMS, so the network stays exportable):
    "pred_logits" (B, N, C) class logits, "pred_scores" (B, N, 1) objectness logits and
    "pred_masks" (B, N, H/4, W/4) mask logits.
    """

    def __init__(self, config: ModelConfig, preset: str | None = None):
        super().__init__()
        self.config = config
        self.preset = preset
        self.backbone = ResNet(config.depth, config.resnet_variant, config.deform_stages, config.norm)
        self.encoder = InstanceContextEncoder(self.backbone.out_channels, config.encoder_channels)
        groups = 1 if config.decoder == "iam" else config.groups
        if config.decoder not in ("iam", "giam", "giam_soft"):
            raise ValueError(f"unknown decoder {config.decoder!r}: expected 'iam', 'giam' or 'giam_soft'")
        self.decoder = IAMDecoder(
            config.encoder_channels, config.num_classes, num_masks=config.num_masks,
            kernel_dim=config.kernel_dim, inst_dim=config.inst_dim, inst_convs=config.inst_convs,
            mask_dim=config.mask_dim, mask_convs=config.mask_convs, groups=groups,
            softmax=config.decoder == "giam_soft", scale_factor=config.scale_factor)
        # Not persistent: the official checkpoints do not carry them and they are part of the preset.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2] % SIZE_DIVISIBILITY or images.shape[-1] % SIZE_DIVISIBILITY:
            raise ValueError(f"image height and width must be multiples of {SIZE_DIVISIBILITY}, "
                             f"got {tuple(images.shape[-2:])}; pad them (the Predictor does)")
        x = (images - self.pixel_mean) / self.pixel_std
        return self.decoder(self.encoder(self.backbone(x)))


def build_model(name: str | ModelConfig = "r50_giam", num_classes: int | None = None, **overrides) -> SparseInst:
    """Build a SparseInst network from a preset name (see `PRESETS`) or a `ModelConfig`.

    `num_classes` and any other `ModelConfig` field can be overridden, e.g.
    `build_model("r18_giam", num_classes=5, norm="frozen_bn")`.
    """
    if isinstance(name, ModelConfig):
        config, preset = name, None
    else:
        config, preset = get_preset(name), name
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        overrides["num_classes"] = num_classes
    if overrides:
        config = config.replace(**overrides)
    return SparseInst(config, preset=preset)
