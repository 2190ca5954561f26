"""Model presets named after the official SparseInst configs.

A preset is a plain dataclass: `build_model` turns it into a network, and checkpoints record the preset
name so a file can be loaded without remembering how it was trained.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# ImageNet statistics in RGB order on the 0..255 scale, as the official Base-SparseInst config uses.
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
# Test-time input size of the official configs (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST): the one place it is
# written; a checkpoint of this project records its own in its config.
TEST_MIN_SIZE = 640
TEST_MAX_SIZE = 853


@dataclass(frozen=True)
class ModelConfig:
    """Every architectural hyper-parameter of a SparseInst network."""

    # backbone
    depth: int = 50                      # ResNet depth: 18, 34, 50 or 101
    resnet_variant: str = "b"            # "b": torchvision/detectron2 ResNet; "d": deep stem + avg-pool shortcut
    deform_stages: tuple[bool, ...] = (False, False, False, False)   # res2..res5
    norm: str = "frozen_bn"              # "frozen_bn" (fine-tuning, official) or "bn" (training from scratch)
    # instance context encoder
    encoder_channels: int = 256
    # IAM decoder
    decoder: str = "giam"                # "iam", "giam" (group IAM) or "giam_soft" (softmax group IAM)
    num_classes: int = 80
    num_masks: int = 100
    groups: int = 4
    inst_dim: int = 256
    inst_convs: int = 4
    mask_dim: int = 256
    mask_convs: int = 4
    kernel_dim: int = 128
    scale_factor: float = 2.0            # stride-8 decoder masks -> stride-4 outputs
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    # test-time input size (shorter side, cap on the longer side) the model was trained for
    min_size_test: int = TEST_MIN_SIZE
    max_size_test: int = TEST_MAX_SIZE

    def replace(self, **changes) -> "ModelConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown model option(s) {sorted(unknown)}; valid: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


_DCN_RES4_RES5 = (False, False, True, True)

PRESETS: dict[str, ModelConfig] = {
    "r50_base": ModelConfig(decoder="iam"),
    "r50_giam": ModelConfig(),
    "r50_giam_soft": ModelConfig(decoder="giam_soft"),
    "r50_dcn_giam": ModelConfig(deform_stages=_DCN_RES4_RES5),
    "r50vd_giam": ModelConfig(resnet_variant="d"),
    "r50vd_dcn_giam": ModelConfig(resnet_variant="d", deform_stages=_DCN_RES4_RES5),
    "r101_giam": ModelConfig(depth=101),
    "r101_dcn_giam": ModelConfig(depth=101, deform_stages=_DCN_RES4_RES5),
    # Light preset for CPUs and edge devices: ResNet-18 and a decoder half as wide with two convs per
    # branch; trained from scratch here, so it uses ordinary (foldable) batch norm.
    "r18_giam": ModelConfig(depth=18, norm="bn", encoder_channels=128, inst_dim=128, inst_convs=2,
                            mask_dim=128, mask_convs=2, kernel_dim=64),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None
