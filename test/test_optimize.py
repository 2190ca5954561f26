"""optimize_for_inference: every rewrite keeps the model's outputs up to float rounding."""
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference.optimize import fold_batch_norm, fold_batch_norms, optimize_for_inference

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def randomized(name, seed=0, **overrides):
    """A model whose norms and deformable offsets are far from their initial identity values."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes=5, **overrides).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NORMS):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            if hasattr(module, "conv2_offset"):
                nn.init.normal_(module.conv2_offset.weight, std=0.02)
    return model


def images(batch=2, height=64, width=96, seed=1):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def assert_outputs_close(actual, expected, rtol=1e-4):
    for key in ("pred_logits", "pred_scores", "pred_masks"):
        scale = expected[key].abs().max()
        error = (actual[key].float() - expected[key]).abs().max()
        assert error <= rtol * scale, f"{key}: max error {error} vs scale {scale}"


def assert_rounding_only(actual, expected, truth, slack=3.0):
    """`actual` is as close to the float64 `truth` as the plain float32 model (`expected`) is, within `slack`.

    Deformable convolutions sample features at learned offsets, so float32 rounding of a folded weight moves
    the samples and the outputs by more than 1e-4 relative on some machines; a wrong fold moves them by
    orders of magnitude more than the plain model's own rounding.
    """
    for key in ("pred_logits", "pred_scores", "pred_masks"):
        scale = truth[key].abs().max()
        own_error = (expected[key].double() - truth[key]).abs().max() / scale
        error = (actual[key].double() - truth[key]).abs().max() / scale
        assert error <= slack * own_error + 1e-5, f"{key}: error {error:.2e}, the plain model's own {own_error:.2e}"


@pytest.mark.parametrize("name", ["r18_giam", "r50_giam", "r50vd_dcn_giam"])
def test_folded_model_matches_plain_model(name):
    """BN (trainable and frozen) folded into plain, deep-stem, shortcut and deformable convs."""
    model = randomized(name)
    reference_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    with torch.inference_mode():
        expected = model(x)
        optimized = optimize_for_inference(model, channels_last=False)
        actual = optimized(x)
        truth = copy.deepcopy(model).double()(x.double())
    assert_rounding_only(actual, expected, truth)
    assert not any(isinstance(m, NORMS) for m in optimized.modules())          # every norm was folded
    assert all(torch.equal(v, reference_state[k]) for k, v in model.state_dict().items())  # input untouched


def test_channels_last_matches():
    model = randomized("r18_giam")
    x = images()
    with torch.inference_mode():
        optimized = optimize_for_inference(model, channels_last=True)
        assert optimized.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert_outputs_close(optimized(x), model(x))


def test_fold_counts_and_rejects_training_batch_norm():
    model = randomized("r18_giam")
    norms = sum(isinstance(m, NORMS) for m in model.modules())
    assert fold_batch_norms(model.backbone) == norms
    conv, norm = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).train()
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norm(conv, norm)


def test_fold_batch_norm_is_exact_on_a_single_layer():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(4, 6, 3, padding=1, bias=False), FrozenBatchNorm2d(6)
    norm.running_mean.normal_(); norm.running_var.uniform_(0.1, 3); norm.weight.normal_(); norm.bias.normal_()
    x = torch.randn(2, 4, 9, 9)
    expected = norm(conv(x))
    fold_batch_norm(conv, norm)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_bf16_model_is_close_to_fp32():
    model = randomized("r18_giam")
    x = images()
    with torch.inference_mode():
        expected = model(x)
        actual = optimize_for_inference(model, precision="bf16")(x)
    assert all(v.dtype == torch.float32 for v in actual.values())
    assert_outputs_close(actual, expected, rtol=0.05)


def test_precision_errors():
    model = build_model("r18_giam", num_classes=2)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        optimize_for_inference(model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        optimize_for_inference(model, precision="int4", device="cpu")


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@pytest.mark.parametrize("precision,min_iou", [("fp32", 0.995), ("bf16", 0.9)])
def test_optimized_predictor_matches_plain_eager_reference(precision, min_iou):
    """Final instances: optimised (fast post-processing) vs plain eager model + official post-processing."""
    model = randomized("r18_giam")
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)   # resized to 64x90
    plain = Predictor(model, min_size=64, max_size=96, score_threshold=0.0, device="cpu",
                      optimize=False, postprocess="reference")(image)
    fast = Predictor(model, min_size=64, max_size=96, score_threshold=0.0, device="cpu", precision=precision)(image)
    assert len(fast) == len(plain) == model.config.num_masks
    if precision == "fp32":
        np.testing.assert_allclose(fast.scores, plain.scores, rtol=1e-4)
        np.testing.assert_array_equal(fast.labels, plain.labels)
        assert (fast.masks != plain.masks).mean() < 0.005
        ious = [mask_iou(a, b) for a, b in zip(fast.masks, plain.masks)]
    else:  # bf16 may reorder near-equal scores: match each instance to the best plain one of its label
        assert np.abs(np.sort(fast.scores) - np.sort(plain.scores)).max() < 0.05
        ious = [max(mask_iou(mask, other) for other in plain.masks[plain.labels == label])
                for mask, label in zip(fast.masks, fast.labels) if (plain.labels == label).any()]
    assert np.mean(ious) >= min_iou
