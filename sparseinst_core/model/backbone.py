"""ResNet backbones returning the stride-8/16/32 features (res3, res4, res5) the encoder fuses.

Built from torchvision's residual blocks so parameter names follow torchvision (`conv1`, `bn1`,
`layer1.0.conv1`, ...). Two official variants are added on top:
- ResNet-vd ("d"): a deep 3x3 stem and an average-pooled shortcut, as timm's resnet50d, whose parameter
  names the official vd checkpoints use and which these modules reproduce;
- deformable convolutions (DCN v1, one offset group) in the 3x3 conv of chosen stages, through
  `torchvision.ops.deform_conv2d`.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import DeformConv2d
from torchvision.ops.misc import FrozenBatchNorm2d

_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def norm_layer_for(norm: str):
    """Frozen batch norm keeps pretrained statistics fixed when fine-tuning with small batches."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    raise ValueError(f"unknown norm {norm!r}: expected 'frozen_bn' or 'bn'")


class DeformBottleneck(Bottleneck):
    """Bottleneck whose 3x3 conv samples at learned offsets (18 channels: (dy, dx) for 9 taps)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=None):
        super().__init__(inplanes, planes, stride=stride, downsample=downsample, norm_layer=norm_layer)
        width = planes  # base_width 64, one group
        self.conv2_offset = nn.Conv2d(width, 18, kernel_size=3, stride=stride, padding=1)
        self.conv2 = DeformConv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        # Zero offsets: the block starts as a plain convolution.
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out, self.conv2_offset(out))
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without the classifier; `forward` returns {"res3", "res4", "res5"}."""

    def __init__(self, depth: int = 50, variant: str = "b", deform_stages=(False,) * 4,
                 norm: str = "frozen_bn"):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"unsupported ResNet depth {depth}; supported: {sorted(_DEPTHS)}")
        if variant not in ("b", "d"):
            raise ValueError(f"unknown ResNet variant {variant!r}: expected 'b' or 'd'")
        block, layers = _DEPTHS[depth]
        if any(deform_stages) and block is not Bottleneck:
            raise ValueError("deformable convolutions need a bottleneck ResNet (depth 50 or 101)")
        norm_layer = norm_layer_for(norm)

        if variant == "d":  # deep stem: three 3x3 convs of widths 32, 32, 64
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), norm_layer(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, stride=1, padding=1, bias=False), norm_layer(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, stride=1, padding=1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = 64
        for index, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage_block = DeformBottleneck if deform_stages[index] else block
            stride = 1 if index == 0 else 2
            stage, inplanes = self._make_stage(stage_block, inplanes, planes, num_blocks, stride,
                                               avg_down=variant == "d", norm_layer=norm_layer)
            self.add_module(f"layer{index + 1}", stage)
        expansion = block.expansion
        self.out_channels = {"res3": 128 * expansion, "res4": 256 * expansion, "res5": 512 * expansion}
        self._init_weights()

    @staticmethod
    def _make_stage(block, inplanes, planes, num_blocks, stride, avg_down, norm_layer):
        outplanes = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            if avg_down:  # ResNet-d: pool first so the 1x1 projection sees every input pixel
                pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                        if stride != 1 else nn.Identity())
                downsample = nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False),
                                           norm_layer(outplanes))
            else:
                downsample = nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                                           norm_layer(outplanes))
        blocks = [block(inplanes, planes, stride=stride, downsample=downsample, norm_layer=norm_layer)]
        blocks += [block(outplanes, planes, norm_layer=norm_layer) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks), outplanes

    def _init_weights(self):
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, DeformConv2d)) and not name.endswith("conv2_offset"):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))     # (B, 64, H/4, W/4)
        x = self.layer1(x)
        res3 = self.layer2(x)                                     # (B, C3, H/8, W/8)
        res4 = self.layer3(res3)                                  # (B, C4, H/16, W/16)
        res5 = self.layer4(res4)                                  # (B, C5, H/32, W/32)
        return {"res3": res3, "res4": res4, "res5": res5}
