"""Bipartite matching between SparseInst predictions and ground-truth instances.

SparseInst predicts a fixed set of N instances per image and trains them one-to-one: each ground-truth
instance is assigned to exactly one prediction by the Hungarian algorithm on the pairwise score of
Eq. (1) in the paper,

    C(i, k) = DICE(m_i, t_k) ** alpha * p_{i, c_k} ** beta,

where m_i is the (sigmoid) mask of prediction i, t_k the mask of target k, and p_{i, c_k} the sigmoid
probability that prediction i belongs to the class of target k. The score is maximised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

# A list of (pred_indices [M_b], target_indices [M_b]) int64 pairs, one per image, M_b = min(N, K_b).
MatchIndices = list[tuple[Tensor, Tensor]]


def dice_score(mask_logits: Tensor, target_masks: Tensor, eps: float = 1e-4) -> Tensor:
    """Pairwise dice coefficient between predicted masks and target masks (paper Eq. 2).

    Args:
        mask_logits: [N, P] mask logits of N predictions over P pixels.
        target_masks: [K, P] target masks with values in [0, 1] (soft after resizing).
        eps: added to the denominator so empty masks give a score of 0, not NaN.

    Returns:
        [N, K] dice scores in [0, 1].
    """
    probs = mask_logits.sigmoid()                                       # [N, P]
    numerator = 2 * probs @ target_masks.t()                            # [N, K]
    denominator = (probs * probs).sum(-1)[:, None] + (target_masks * target_masks).sum(-1)[None, :]
    return numerator / (denominator + eps)                              # [N, K]


def resize_target_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize binary target masks to the prediction resolution, as the official code does.

    Bilinear resampling (align_corners=False) of the float masks, so the result is soft at the edges.

    Args:
        masks: [K, H, W] bool (or float) masks at the padded input resolution.
        size: (h, w) of the predicted masks, normally (H / 4, W / 4).

    Returns:
        [K, h, w] float32 masks with values in [0, 1].
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    resized = F.interpolate(masks[:, None].float(), size=size, mode="bilinear",
                            align_corners=False)                        # [K, 1, h, w]
    return resized[:, 0]                                                # [K, h, w]


def check_targets(targets: list[dict[str, Tensor]], batch_size: int, num_classes: int) -> None:
    """Raise ValueError when `targets` does not follow the training contract.

    Each target is a dict with "labels" int64 [K] in 0..num_classes-1 and "masks" [K, H, W].
    """
    if len(targets) != batch_size:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch_size} images")
    for b, target in enumerate(targets):
        if "labels" not in target or "masks" not in target:
            raise ValueError(f"target {b} must have 'labels' and 'masks'; got keys {sorted(target)}")
        labels, masks = target["labels"], target["masks"]
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"target {b}: 'labels' must be an integer tensor [K]; got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        if masks.dim() != 3 or masks.shape[0] != labels.shape[0]:
            raise ValueError(f"target {b}: 'masks' must be [K, H, W] with K = {labels.shape[0]} labels; "
                             f"got shape {tuple(masks.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"target {b}: labels must lie in 0..{num_classes - 1}; got "
                             f"{labels.min().item()}..{labels.max().item()}")


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets maximising dice**alpha * prob**beta.

    Runs without gradients and in float32 even under autocast: the scores are raised to fractional
    powers and compared across the whole set, where half precision would change the assignment.
    """

    def __init__(self, alpha: float = 0.8, beta: float = 0.2):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def matching_scores(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[Tensor]:
        """Pairwise matching score per image.

        Args:
            outputs: "pred_logits" [B, N, C] class logits and "pred_masks" [B, N, h, w] mask logits.
            targets: B dicts with "labels" int64 [K_b] and "masks" bool [K_b, H, W].

        Returns:
            B float32 tensors [N, K_b]: dice(pred i, target k)**alpha * p(i, class of k)**beta.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        batch_size, num_queries, num_classes = pred_logits.shape
        if pred_masks.dim() != 4 or pred_masks.shape[:2] != (batch_size, num_queries):
            raise ValueError(f"pred_masks must be [B, N, h, w] = [{batch_size}, {num_queries}, h, w]; "
                             f"got {tuple(pred_masks.shape)}")
        check_targets(targets, batch_size, num_classes)
        mask_size = tuple(pred_masks.shape[-2:])

        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            class_probs = pred_logits.float().sigmoid()                 # [B, N, C]
            mask_logits = pred_masks.float().flatten(2)                 # [B, N, h*w]
            scores = []
            for b, target in enumerate(targets):
                labels = target["labels"].to(pred_logits.device)        # [K]
                target_masks = resize_target_masks(target["masks"].to(pred_masks.device), mask_size)
                dice = dice_score(mask_logits[b], target_masks.flatten(1))   # [N, K]
                probs = class_probs[b][:, labels]                        # [N, K]
                scores.append(dice ** self.alpha * probs ** self.beta)   # [N, K]
        return scores

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> MatchIndices:
        """Match predictions to targets image by image.

        Args:
            outputs: "pred_logits" [B, N, C] and "pred_masks" [B, N, h, w] (other keys are ignored).
            targets: B dicts with "labels" int64 [K_b] and "masks" bool [K_b, H, W]; K_b may be 0.

        Returns:
            B pairs (pred_indices, target_indices) of int64 CPU tensors [min(N, K_b)]; prediction
            pred_indices[j] is assigned to target target_indices[j]. Empty for images without targets.
        """
        indices = []
        for score in self.matching_scores(outputs, targets):
            score = score.cpu()                                          # [N, K]
            if not torch.isfinite(score).all():
                raise RuntimeError("matching score is not finite: the predictions contain NaN or Inf")
            pred_idx, target_idx = linear_sum_assignment(score.numpy(), maximize=True)
            indices.append((torch.as_tensor(pred_idx, dtype=torch.int64),
                            torch.as_tensor(target_idx, dtype=torch.int64)))
        return indices
