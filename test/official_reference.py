"""An independent, functional re-statement of the official SparseInst forward pass, driven directly by
official-format state dicts (detectron2 ResNet names, timm ResNet-vd names, official encoder/decoder names).

It shares no code with `sparseinst_core`: tests build random official checkpoints from `official_layout`,
run this reference on them, load the same file with `load_checkpoint`, and require equal outputs. A wrong key
mapping, a wrong block order, swapped coordinate channels or a wrong group interleaving all fail.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = torch.tensor([123.675, 116.280, 103.530]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.120, 57.375]).view(1, 3, 1, 1)
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(spec, prefix, channels):
    for name in ("weight", "bias", "running_mean", "running_var"):
        spec[f"{prefix}.{name}"] = (channels,)


def official_layout(depth=50, vd=False, dcn=(False, False, False, False), decoder="giam", num_classes=80,
                    channels=256, dim=256, kernel_dim=128, num_masks=100, groups=4):
    """Key -> shape of an official SparseInst checkpoint, written from the official repository's layout."""
    spec = {}
    if vd:
        spec["backbone.conv1.0.weight"] = (32, 3, 3, 3)
        _bn(spec, "backbone.conv1.1", 32)
        spec["backbone.conv1.3.weight"] = (32, 32, 3, 3)
        _bn(spec, "backbone.conv1.4", 32)
        spec["backbone.conv1.6.weight"] = (64, 32, 3, 3)
        _bn(spec, "backbone.bn1", 64)
    else:
        spec["backbone.stem.conv1.weight"] = (64, 3, 7, 7)
        _bn(spec, "backbone.stem.conv1.norm", 64)
    in_ch = 64
    for stage, blocks in enumerate(BLOCKS[depth]):
        width, out_ch = 64 * 2 ** stage, 256 * 2 ** stage
        for i in range(blocks):
            p = f"backbone.layer{stage + 1}.{i}" if vd else f"backbone.res{stage + 2}.{i}"
            norm = (lambda n: f"{p}.bn{n}") if vd else (lambda n: f"{p}.conv{n}.norm")
            spec[f"{p}.conv1.weight"] = (width, in_ch if i == 0 else out_ch, 1, 1)
            _bn(spec, norm(1), width)
            if dcn[stage]:
                spec[f"{p}.conv2_offset.weight"] = (18, width, 3, 3)
                spec[f"{p}.conv2_offset.bias"] = (18,)
            spec[f"{p}.conv2.weight"] = (width, width, 3, 3)
            _bn(spec, norm(2), width)
            spec[f"{p}.conv3.weight"] = (out_ch, width, 1, 1)
            _bn(spec, norm(3), out_ch)
            if i == 0:
                if vd:
                    spec[f"{p}.downsample.1.weight"] = (out_ch, in_ch, 1, 1)
                    _bn(spec, f"{p}.downsample.2", out_ch)
                else:
                    spec[f"{p}.shortcut.weight"] = (out_ch, in_ch, 1, 1)
                    _bn(spec, f"{p}.shortcut.norm", out_ch)
        in_ch = out_ch
    for i, c in enumerate((2048, 1024, 512)):
        spec[f"encoder.fpn_laterals.{i}.weight"] = (channels, c, 1, 1)
        spec[f"encoder.fpn_laterals.{i}.bias"] = (channels,)
        spec[f"encoder.fpn_outputs.{i}.weight"] = (channels, channels, 3, 3)
        spec[f"encoder.fpn_outputs.{i}.bias"] = (channels,)
    for i in range(4):
        spec[f"encoder.ppm.stages.{i}.1.weight"] = (channels // 4, channels, 1, 1)
        spec[f"encoder.ppm.stages.{i}.1.bias"] = (channels // 4,)
    spec["encoder.ppm.bottleneck.weight"] = (channels, channels * 2, 1, 1)
    spec["encoder.ppm.bottleneck.bias"] = (channels,)
    spec["encoder.fusion.weight"] = (channels, channels * 3, 1, 1)
    spec["encoder.fusion.bias"] = (channels,)
    g = 1 if decoder == "iam" else groups
    for branch, convs in (("inst_branch.inst_convs", 4), ("mask_branch.mask_convs", 4)):
        for k in range(convs):
            spec[f"decoder.{branch}.{2 * k}.weight"] = (dim, (channels + 2) if k == 0 else dim, 3, 3)
            spec[f"decoder.{branch}.{2 * k}.bias"] = (dim,)
    ib = "decoder.inst_branch"
    spec[f"{ib}.iam_conv.weight"] = (num_masks * g, dim // g, 3, 3)
    spec[f"{ib}.iam_conv.bias"] = (num_masks * g,)
    if g > 1:
        spec[f"{ib}.fc.weight"] = (dim * g, dim * g)
        spec[f"{ib}.fc.bias"] = (dim * g,)
    for head, out in (("cls_score", num_classes), ("mask_kernel", kernel_dim), ("objectness", 1)):
        spec[f"{ib}.{head}.weight"] = (out, dim * g)
        spec[f"{ib}.{head}.bias"] = (out,)
    if decoder == "giam_soft":
        spec[f"{ib}.softmax_bias"] = (1,)
    spec["decoder.mask_branch.projection.weight"] = (kernel_dim, dim, 1, 1)
    spec["decoder.mask_branch.projection.bias"] = (kernel_dim,)
    return spec


def random_official_state_dict(spec, seed=0):
    """Random weights scaled so activations stay O(1) through 100+ layers."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec.items():
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1 and ("norm" in key or ".bn" in key or "conv1.1" in key or "conv1.4" in key
                                  or "downsample.2" in key) and key.endswith("weight"):
            value = torch.rand(shape, generator=gen) * 0.5 + 0.5
        elif "conv2_offset" in key:
            value = torch.randn(shape, generator=gen) * 0.05   # offsets of a fraction of a pixel..pixels
        elif len(shape) == 1:
            value = torch.randn(shape, generator=gen) * 0.1
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            value = torch.randn(shape, generator=gen) * (1.0 / fan_in) ** 0.5
        state[key] = value
    return state


def frozen_bn(x, s, p, eps=1e-5):
    scale = s[f"{p}.weight"] * (s[f"{p}.running_var"] + eps).rsqrt()
    shift = s[f"{p}.bias"] - s[f"{p}.running_mean"] * scale
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def deform_conv_by_sampling(x, offset, weight, stride, padding=1):
    """DCN v1 as written in the original paper/detectron2: tap k of a 3x3 kernel samples at
    p0 + (i - 1, j - 1) + (offset[2k], offset[2k+1]) = (dy, dx), bilinearly, zero outside."""
    B, C, H, W = x.shape
    Ho, Wo = offset.shape[-2:]
    ys = torch.arange(Ho, dtype=x.dtype).view(-1, 1) * stride - padding
    xs = torch.arange(Wo, dtype=x.dtype).view(1, -1) * stride - padding
    out = 0
    for k in range(9):
        i, j = divmod(k, 3)
        py = ys + i + offset[:, 2 * k]
        px = xs + j + offset[:, 2 * k + 1]
        grid = torch.stack([2 * px / (W - 1) - 1, 2 * py / (H - 1) - 1], dim=-1)   # align_corners=True
        sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + torch.einsum("oc,bchw->bohw", weight[:, :, i, j], sampled)
    return out


def _bottleneck(x, s, p, vd, stride, first, dcn):
    norm = (lambda n: f"{p}.bn{n}") if vd else (lambda n: f"{p}.conv{n}.norm")
    out = F.relu(frozen_bn(F.conv2d(x, s[f"{p}.conv1.weight"]), s, norm(1)))
    if dcn:
        offset = F.conv2d(out, s[f"{p}.conv2_offset.weight"], s[f"{p}.conv2_offset.bias"], stride, 1)
        out = deform_conv_by_sampling(out, offset, s[f"{p}.conv2.weight"], stride)
    else:
        out = F.conv2d(out, s[f"{p}.conv2.weight"], stride=stride, padding=1)
    out = F.relu(frozen_bn(out, s, norm(2)))
    out = frozen_bn(F.conv2d(out, s[f"{p}.conv3.weight"]), s, norm(3))
    if first:
        if vd:
            shortcut = F.avg_pool2d(x, 2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else x
            shortcut = frozen_bn(F.conv2d(shortcut, s[f"{p}.downsample.1.weight"]), s, f"{p}.downsample.2")
        else:
            shortcut = frozen_bn(F.conv2d(x, s[f"{p}.shortcut.weight"], stride=stride), s, f"{p}.shortcut.norm")
    else:
        shortcut = x
    return F.relu(out + shortcut)


def official_forward(s, images, depth=50, vd=False, dcn=(False,) * 4, decoder="giam", groups=4):
    x = (images - MEAN) / STD
    if vd:
        x = F.relu(frozen_bn(F.conv2d(x, s["backbone.conv1.0.weight"], stride=2, padding=1), s, "backbone.conv1.1"))
        x = F.relu(frozen_bn(F.conv2d(x, s["backbone.conv1.3.weight"], padding=1), s, "backbone.conv1.4"))
        x = F.conv2d(x, s["backbone.conv1.6.weight"], padding=1)
        x = F.relu(frozen_bn(x, s, "backbone.bn1"))
    else:
        x = F.relu(frozen_bn(F.conv2d(x, s["backbone.stem.conv1.weight"], stride=2, padding=3), s,
                             "backbone.stem.conv1.norm"))
    x = F.max_pool2d(x, 3, 2, 1)
    feats = []
    for stage, blocks in enumerate(BLOCKS[depth]):
        for i in range(blocks):
            p = f"backbone.layer{stage + 1}.{i}" if vd else f"backbone.res{stage + 2}.{i}"
            stride = 2 if (i == 0 and stage > 0) else 1
            x = _bottleneck(x, s, p, vd, stride, i == 0, dcn[stage])
        feats.append(x)
    res3, res4, res5 = feats[1:]

    # encoder
    def conv(t, name, padding=0):
        return F.conv2d(t, s[f"{name}.weight"], s[f"{name}.bias"], padding=padding)

    lat = conv(res5, "encoder.fpn_laterals.0")
    h, w = lat.shape[-2:]
    priors = [F.interpolate(F.relu(conv(F.adaptive_avg_pool2d(lat, k), f"encoder.ppm.stages.{i}.1")), (h, w),
                            mode="bilinear", align_corners=False) for i, k in enumerate((1, 2, 3, 6))]
    prev = F.relu(conv(torch.cat(priors + [lat], 1), "encoder.ppm.bottleneck"))
    outs = [conv(prev, "encoder.fpn_outputs.0", 1)]
    for i, feat in ((1, res4), (2, res3)):
        prev = conv(feat, f"encoder.fpn_laterals.{i}") + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        outs.insert(0, conv(prev, f"encoder.fpn_outputs.{i}", 1))
    size = outs[0].shape[-2:]
    fused = torch.cat([outs[0]] + [F.interpolate(o, size, mode="bilinear", align_corners=False) for o in outs[1:]], 1)
    feat = conv(fused, "encoder.fusion")

    # decoder
    B, _, H, W = feat.shape
    yy = -1.0 + 2.0 * torch.arange(H) / (H - 1)
    xx = -1.0 + 2.0 * torch.arange(W) / (W - 1)
    gy, gx = torch.meshgrid(yy, xx, indexing="ij")
    coords = torch.stack([gx, gy]).unsqueeze(0).expand(B, -1, -1, -1)
    feat = torch.cat([coords, feat], 1)
    inst = feat
    for k in range(4):
        inst = F.relu(conv(inst, f"decoder.inst_branch.inst_convs.{2 * k}", 1))
    g = 1 if decoder == "iam" else groups
    ib = "decoder.inst_branch"
    iam = F.conv2d(inst, s[f"{ib}.iam_conv.weight"], s[f"{ib}.iam_conv.bias"], padding=1, groups=g)
    n_all = iam.shape[1]
    C = inst.shape[1]
    if decoder == "giam_soft":
        prob = F.softmax(iam.view(B, n_all, -1) + s[f"{ib}.softmax_bias"], dim=-1)
        pooled = torch.bmm(prob, inst.view(B, C, -1).permute(0, 2, 1))
    else:
        prob = iam.sigmoid().view(B, n_all, -1)
        pooled = torch.bmm(prob, inst.view(B, C, -1).permute(0, 2, 1)) / prob.sum(-1).clamp(min=1e-6)[:, :, None]
    if g > 1:
        n = n_all // g
        pooled = pooled.reshape(B, g, n, -1).transpose(1, 2).reshape(B, n, -1)
        pooled = F.relu(F.linear(pooled, s[f"{ib}.fc.weight"], s[f"{ib}.fc.bias"]))
    logits = F.linear(pooled, s[f"{ib}.cls_score.weight"], s[f"{ib}.cls_score.bias"])
    kernel = F.linear(pooled, s[f"{ib}.mask_kernel.weight"], s[f"{ib}.mask_kernel.bias"])
    scores = F.linear(pooled, s[f"{ib}.objectness.weight"], s[f"{ib}.objectness.bias"])
    mask_feat = feat
    for k in range(4):
        mask_feat = F.relu(conv(mask_feat, f"decoder.mask_branch.mask_convs.{2 * k}", 1))
    mask_feat = conv(mask_feat, "decoder.mask_branch.projection")
    D = mask_feat.shape[1]
    masks = torch.bmm(kernel, mask_feat.view(B, D, H * W)).view(B, -1, H, W)
    masks = F.interpolate(masks, scale_factor=2.0, mode="bilinear", align_corners=False)
    return {"pred_logits": logits, "pred_scores": scores, "pred_masks": masks}
