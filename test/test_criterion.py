"""Tests of the SparseInst losses against formulas written out here."""
import math

import pytest
import torch
import torch.distributed as dist

from sparseinst_core.training.criterion import DEFAULT_WEIGHTS, SparseInstCriterion
from sparseinst_core.training.matcher import HungarianMatcher
from set_prediction_cases import downsample
from set_prediction_cases import make_batch as random_batch


def make_batch(*args, **kwargs):
    """Random outputs that are leaves requiring grad, so the tests can check gradients."""
    return random_batch(*args, requires_grad=True, **kwargs)


class FixedMatcher:
    """Stands in for the Hungarian matcher so each loss is checked on a known assignment."""

    def __init__(self, indices):
        self.indices = [(torch.as_tensor(p, dtype=torch.int64), torch.as_tensor(t, dtype=torch.int64))
                        for p, t in indices]

    def __call__(self, outputs, targets):
        return self.indices


def bce(p, t):
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p))


def direct_losses(outputs, targets, indices):
    """Every loss term computed pair by pair from its formula (float64); indices: B (pred, target) lists."""
    indices = [(torch.as_tensor(p).tolist(), torch.as_tensor(t).tolist()) for p, t in indices]
    logits = outputs["pred_logits"].detach().double()
    masks = outputs["pred_masks"].detach().double()
    scores = outputs["pred_scores"].detach().double()
    num_instances = max(sum(len(t["labels"]) for t in targets), 1)

    one_hot = torch.zeros_like(logits)
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        for i, k in zip(pred_idx, tgt_idx):
            one_hot[b, i, targets[b]["labels"][k]] = 1
    p = logits.sigmoid()
    p_t = p * one_hot + (1 - p) * (1 - one_hot)
    alpha_t = 0.25 * one_hot + 0.75 * (1 - one_hot)
    focal = (alpha_t * (1 - p_t) ** 2 * bce(p, one_hot)).sum() / num_instances

    dice, pixel_bce, objectness, pixels, pairs = 0.0, 0.0, 0.0, 0, 0
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        small_targets = downsample(targets[b]["masks"]).double()
        for i, k in zip(pred_idx, tgt_idx):
            m, t = masks[b, i].sigmoid(), small_targets[k]
            dice += 1 - 2 * (m * t).sum() / ((m ** 2).sum() + (t ** 2).sum() + 1e-4)
            pixel_bce += bce(m, t).sum()
            pixels += t.numel()
            pred_fg, tgt_fg = m >= 0.4, t > 0.5
            iou = (pred_fg & tgt_fg).sum() / ((pred_fg | tgt_fg).sum() + 1e-6)
            objectness += bce(scores[b, i, 0].sigmoid(), iou)
            pairs += 1
    if pairs == 0:
        return {"loss_ce": focal, "loss_dice": 0.0, "loss_mask": 0.0, "loss_objectness": 0.0}
    return {"loss_ce": focal, "loss_dice": dice / num_instances, "loss_mask": pixel_bce / pixels,
            "loss_objectness": objectness / pairs}


def assert_losses_close(losses, expected, rtol=1e-5):
    assert set(losses) == set(expected)
    for name, value in losses.items():
        assert value.dtype == torch.float32 and value.dim() == 0, name
        assert value.item() == pytest.approx(float(expected[name]), rel=rtol, abs=1e-6), name


@pytest.mark.parametrize("seed", range(3))
def test_each_term_matches_formula(seed):
    outputs, targets = make_batch([2, 0, 3], seed=seed)
    indices = [([3, 1], [0, 1]), ([], []), ([0, 4, 2], [2, 0, 1])]
    losses = SparseInstCriterion(matcher=FixedMatcher(indices))(outputs, targets)
    assert_losses_close(losses, direct_losses(outputs, targets, indices))


def test_with_hungarian_matching():
    outputs, targets = make_batch([1, 4], seed=11)
    matcher = HungarianMatcher()
    losses = SparseInstCriterion(matcher=matcher)(outputs, targets)
    assert_losses_close(losses, direct_losses(outputs, targets, matcher(outputs, targets)))


def test_normalised_by_instance_count():
    """Dice and class sums are divided by the instance count, pixel BCE and objectness are means."""
    outputs, targets = make_batch([2], seed=5)
    pair = FixedMatcher([([1, 3], [0, 1])])
    base = SparseInstCriterion(matcher=pair)(outputs, targets)
    # Two more (unmatched) target instances: 4 instead of 2, same matched pairs.
    targets_more = [{"labels": torch.cat([targets[0]["labels"], torch.tensor([0, 1])]),
                     "masks": torch.cat([targets[0]["masks"], targets[0]["masks"]])}]
    more = SparseInstCriterion(matcher=pair)(outputs, targets_more)
    assert more["loss_ce"].item() == pytest.approx(base["loss_ce"].item() / 2, rel=1e-6)
    assert more["loss_dice"].item() == pytest.approx(base["loss_dice"].item() / 2, rel=1e-6)
    assert more["loss_mask"].item() == pytest.approx(base["loss_mask"].item(), rel=1e-6)
    assert more["loss_objectness"].item() == pytest.approx(base["loss_objectness"].item(), rel=1e-6)


def test_instance_count_averaged_over_ranks(monkeypatch):
    """With another rank holding 6 instances, this rank (2 instances) divides by (2 + 6) / 2 = 4."""
    outputs, targets = make_batch([2], seed=5)
    pair = FixedMatcher([([1, 3], [0, 1])])
    local = SparseInstCriterion(matcher=pair)(outputs, targets)

    def all_reduce_with_other_rank(tensor):
        tensor += 6.0
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce_with_other_rank)
    averaged = SparseInstCriterion(matcher=pair)(outputs, targets)
    assert averaged["loss_ce"].item() == pytest.approx(local["loss_ce"].item() / 2, rel=1e-6)
    assert averaged["loss_dice"].item() == pytest.approx(local["loss_dice"].item() / 2, rel=1e-6)


def test_no_targets_in_batch():
    outputs, targets = make_batch([0, 0], seed=3)
    criterion = SparseInstCriterion()
    losses = criterion(outputs, targets)
    # Focal loss on all-negative targets divided by the clamped count of 1.
    assert_losses_close(losses, direct_losses(outputs, targets, [([], []), ([], [])]))
    criterion.total_loss(losses).backward()
    for name, tensor in outputs.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
    assert outputs["pred_masks"].grad.abs().sum() == 0


def test_weights_and_total():
    outputs, targets = make_batch([2, 1], seed=8)
    criterion = SparseInstCriterion()
    assert criterion.weight_dict == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 2.0, "loss_objectness": 1.0}
    losses = criterion(outputs, targets)
    expected = sum(DEFAULT_WEIGHTS[name] * losses[name].item() for name in DEFAULT_WEIGHTS)
    assert criterion.total_loss(losses).item() == pytest.approx(expected, rel=1e-6)

    custom = SparseInstCriterion(weight_dict={"loss_ce": 1.0, "loss_dice": 3.0})
    assert custom.total_loss(losses).item() == pytest.approx(
        losses["loss_ce"].item() + 3 * losses["loss_dice"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="weight_dict"):
        SparseInstCriterion(weight_dict={"loss_bbox": 1.0})
    with pytest.raises(ValueError, match="missing"):
        criterion.total_loss({"loss_ce": losses["loss_ce"]})


def test_gradients_flow_and_are_finite():
    outputs, targets = make_batch([3, 1], seed=9)
    criterion = SparseInstCriterion()
    criterion.total_loss(criterion(outputs, targets)).backward()
    for name, tensor in outputs.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


def test_objectness_target_is_iou_of_binarised_mask():
    """Known masks: target covers rows 0-1 of a 4x4 grid, prediction (sigmoid 0.45 >= 0.4) rows 1-2,
    so IoU = 4 / 12. The BCE gradient w.r.t. the objectness logit is sigmoid(x) - IoU."""
    outputs, targets = make_batch([1], num_queries=2, size=(4, 4), seed=10)
    target = torch.zeros(1, 16, 16, dtype=torch.bool)
    target[:, :8] = True                                    # rows 0-1 at 1/4 resolution
    targets[0]["masks"] = target
    masks = torch.full((4, 4), -5.0)
    masks[1:3] = math.log(0.45 / 0.55)                      # probability 0.45
    with torch.no_grad():
        outputs["pred_masks"][0, 1] = masks
    criterion = SparseInstCriterion(matcher=FixedMatcher([([1], [0])]))
    criterion(outputs, targets)["loss_objectness"].backward()
    score_logit = outputs["pred_scores"][0, 1, 0].detach()
    assert outputs["pred_scores"].grad[0, 1, 0].item() == pytest.approx(
        (score_logit.sigmoid() - 4 / 12).item(), abs=1e-6)
    # The IoU target is detached: the objectness loss sends nothing into the masks.
    assert outputs["pred_masks"].grad is None or outputs["pred_masks"].grad.abs().sum() == 0


def test_float32_under_bf16_autocast_and_bf16_outputs():
    outputs, targets = make_batch([2, 3], seed=12)
    criterion = SparseInstCriterion()
    reference = {k: v.item() for k, v in criterion(outputs, targets).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = criterion(outputs, targets)
    assert_losses_close(losses, reference, rtol=1e-6)

    outputs_bf16, _ = make_batch([2, 3], seed=12, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = criterion(outputs_bf16, targets)
        total = criterion.total_loss(losses)
    assert all(v.dtype == torch.float32 for v in losses.values()) and total.dtype == torch.float32
    total.backward()
    for name, tensor in outputs_bf16.items():
        assert tensor.grad.dtype == torch.bfloat16 and torch.isfinite(tensor.grad).all(), name


def test_bad_outputs_raise():
    outputs, targets = make_batch([1], seed=13)
    with pytest.raises(ValueError, match="pred_scores"):
        SparseInstCriterion()({k: v for k, v in outputs.items() if k != "pred_scores"}, targets)
    with pytest.raises(ValueError, match=r"pred_scores must be \[B, N, 1\]"):
        SparseInstCriterion()({**outputs, "pred_scores": outputs["pred_scores"][..., 0]}, targets)
    with pytest.raises(ValueError, match="labels must lie"):
        SparseInstCriterion()(outputs, [{"labels": torch.tensor([3]), "masks": targets[0]["masks"]}])
