"""Tests of the Hungarian matcher against brute force and a formula written out here."""
import itertools

import pytest
import torch

from sparseinst_core.training.matcher import HungarianMatcher
from set_prediction_cases import downsample, make_batch


def direct_scores(pred_logits, pred_masks, labels, masks, alpha=0.8, beta=0.2):
    """[N, K] score dice**alpha * prob**beta of one image, pair by pair."""
    targets = downsample(masks)
    probs = pred_masks.sigmoid()
    scores = torch.zeros(pred_masks.shape[0], len(labels))
    for i in range(pred_masks.shape[0]):
        for k in range(len(labels)):
            m, t = probs[i], targets[k]
            dice = 2 * (m * t).sum() / ((m ** 2).sum() + (t ** 2).sum() + 1e-4)
            scores[i, k] = dice ** alpha * pred_logits[i, labels[k]].sigmoid() ** beta
    return scores


def brute_force_best(scores):
    """Highest total score over all one-to-one assignments of an [N, K] score matrix."""
    n, k = scores.shape
    if k <= n:
        return max(sum(scores[p[j], j] for j in range(k)) for p in itertools.permutations(range(n), k))
    return max(sum(scores[i, p[i]] for i in range(n)) for p in itertools.permutations(range(k), n))


@pytest.mark.parametrize("seed", range(6))
def test_assignment_maximises_total_score(seed):
    outputs, targets = make_batch([1, 2, 3, 4], seed=seed)
    indices = HungarianMatcher()(outputs, targets)
    assert len(indices) == 4
    for b, ((pred_idx, tgt_idx), target) in enumerate(zip(indices, targets)):
        k = len(target["labels"])
        assert pred_idx.dtype == torch.int64 and tgt_idx.dtype == torch.int64
        assert sorted(tgt_idx.tolist()) == list(range(k))
        assert len(set(pred_idx.tolist())) == k
        scores = direct_scores(outputs["pred_logits"][b], outputs["pred_masks"][b],
                               target["labels"], target["masks"])
        total = scores[pred_idx, tgt_idx].sum().item()
        assert total == pytest.approx(brute_force_best(scores).item(), abs=1e-5)


def test_more_targets_than_queries():
    outputs, targets = make_batch([4], num_queries=3, seed=7)
    (pred_idx, tgt_idx), = HungarianMatcher()(outputs, targets)
    assert sorted(pred_idx.tolist()) == [0, 1, 2] and len(set(tgt_idx.tolist())) == 3
    scores = direct_scores(outputs["pred_logits"][0], outputs["pred_masks"][0],
                           targets[0]["labels"], targets[0]["masks"])
    assert scores[pred_idx, tgt_idx].sum().item() == pytest.approx(brute_force_best(scores).item(), abs=1e-5)


def test_matching_scores_equal_formula():
    outputs, targets = make_batch([3, 2], seed=3)
    for b, score in enumerate(HungarianMatcher().matching_scores(outputs, targets)):
        expected = direct_scores(outputs["pred_logits"][b], outputs["pred_masks"][b],
                                 targets[b]["labels"], targets[b]["masks"])
        torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-6)


def test_recovers_obvious_permutation():
    outputs, targets = make_batch([3], seed=1)
    masks = targets[0]["masks"]
    clean = (downsample(masks) > 0.5).float()          # [3, h, w]
    order = [4, 0, 2]                                  # query holding target k
    outputs["pred_masks"][0] = -10.0
    outputs["pred_masks"][0, order] = 20 * clean - 10
    (pred_idx, tgt_idx), = HungarianMatcher()(outputs, targets)
    assert dict(zip(tgt_idx.tolist(), pred_idx.tolist())) == {0: 4, 1: 0, 2: 2}


def test_images_without_targets():
    outputs, targets = make_batch([0, 2, 0], seed=2)
    indices = HungarianMatcher()(outputs, targets)
    for b in (0, 2):
        pred_idx, tgt_idx = indices[b]
        assert pred_idx.numel() == 0 and tgt_idx.numel() == 0
        assert pred_idx.dtype == torch.int64 and tgt_idx.dtype == torch.int64
    assert len(indices[1][0]) == 2
    outputs, targets = make_batch([0, 0], seed=2)
    assert all(p.numel() == 0 for p, _ in HungarianMatcher()(outputs, targets))


def test_float32_under_bf16_autocast():
    outputs, targets = make_batch([3, 4], seed=4)
    outputs = {k: v.bfloat16() for k, v in outputs.items()}    # e.g. a bf16 model
    matcher = HungarianMatcher()
    reference = matcher.matching_scores({k: v.float() for k, v in outputs.items()}, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = matcher.matching_scores(outputs, targets)
        indices = matcher(outputs, targets)
    for score, ref in zip(scores, reference):
        assert score.dtype == torch.float32
        torch.testing.assert_close(score, ref, rtol=0, atol=1e-7)
    for (p, t), (p_ref, t_ref) in zip(indices, matcher({k: v.float() for k, v in outputs.items()}, targets)):
        assert torch.equal(p, p_ref) and torch.equal(t, t_ref)


def test_no_grad():
    outputs, targets = make_batch([2], seed=5)
    outputs = {k: v.requires_grad_() for k, v in outputs.items()}
    scores = HungarianMatcher().matching_scores(outputs, targets)
    assert not scores[0].requires_grad


@pytest.mark.parametrize("bad, message", [
    (lambda o, t: (o, t[:1]), "targets for a batch"),
    (lambda o, t: (o, [{"labels": torch.tensor([0, 3]), "masks": t[0]["masks"]}, t[1]]), "labels must lie"),
    (lambda o, t: (o, [{"labels": torch.tensor([0]), "masks": t[0]["masks"]}, t[1]]), "'masks' must be"),
    (lambda o, t: (o, [{"labels": t[0]["labels"].float(), "masks": t[0]["masks"]}, t[1]]), "integer"),
    (lambda o, t: ({**o, "pred_masks": o["pred_masks"][:, :2]}, t), "pred_masks must be"),
])
def test_bad_input_raises(bad, message):
    outputs, targets = make_batch([2, 1], seed=6)
    with pytest.raises(ValueError, match=message):
        HungarianMatcher()(*bad(outputs, targets))


def test_non_finite_predictions_raise():
    outputs, targets = make_batch([2], seed=6)
    outputs["pred_masks"][0, 1, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="not finite"):
        HungarianMatcher()(outputs, targets)
