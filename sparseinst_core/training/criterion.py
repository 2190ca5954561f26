"""Training losses of SparseInst (paper Eqs. 3 and 4), DETR style.

After Hungarian matching (see `sparseinst_core.matcher`):
- loss_ce: sigmoid focal loss over all N queries and C classes, with one-hot targets for matched
  queries and all-zero targets for the rest; summed and divided by the number of target instances.
- loss_dice: dice loss of the matched masks, summed and divided by the number of target instances.
- loss_mask: pixel-wise BCE of the matched masks, averaged over their pixels.
- loss_objectness: BCE of the matched objectness logits against the IoU between the binarised
  predicted mask and the target mask (a detached target), averaged over the matched queries.

Mask losses are computed at the prediction resolution (H/4, W/4), against the target masks resized
bilinearly to it, as the official implementation does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from .matcher import HungarianMatcher, MatchIndices, resize_target_masks

# Loss weights of the released config (MODEL.SPARSE_INST.LOSS); the paper text gives 2.0 for the pixel term.
DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 2.0, "loss_objectness": 1.0}

# Binarisation thresholds for the IoU-aware objectness target, as official.
PRED_MASK_THRESHOLD = 0.4     # on the sigmoid of the predicted mask (>=)
TARGET_MASK_THRESHOLD = 0.5   # on the resized, soft target mask (>)


def dice_loss(mask_logits: Tensor, target_masks: Tensor, eps: float = 1e-4) -> Tensor:
    """Dice loss 1 - 2|m t| / (|m|^2 + |t|^2) per matched pair.

    Args:
        mask_logits: [M, P] mask logits.
        target_masks: [M, P] target masks with values in [0, 1].

    Returns:
        [M] losses in [0, 1].
    """
    probs = mask_logits.sigmoid()                                         # [M, P]
    numerator = 2 * (probs * target_masks).sum(-1)                        # [M]
    denominator = (probs * probs).sum(-1) + (target_masks * target_masks).sum(-1)
    return 1 - numerator / (denominator + eps)                            # [M]


def binarised_mask_iou(mask_logits: Tensor, target_masks: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU between thresholded predicted masks and thresholded target masks, per matched pair.

    Args:
        mask_logits: [M, P] mask logits; a pixel is foreground when sigmoid >= PRED_MASK_THRESHOLD.
        target_masks: [M, P] target masks; a pixel is foreground when > TARGET_MASK_THRESHOLD.

    Returns:
        [M] IoUs in [0, 1] (0 when both masks are empty).
    """
    pred = (mask_logits.sigmoid() >= PRED_MASK_THRESHOLD).float()         # [M, P]
    target = (target_masks > TARGET_MASK_THRESHOLD).float()               # [M, P]
    intersection = (pred * target).sum(-1)                                # [M]
    union = pred.sum(-1) + target.sum(-1) - intersection                 # [M]
    return intersection / (union + eps)


def average_num_instances(targets: list[dict[str, Tensor]], device: torch.device) -> float:
    """Number of target instances in the batch averaged over all ranks, at least 1.

    Every rank then divides its sums by the same number, as in DETR and the official SparseInst.
    """
    num_instances = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_instances)
        world_size = dist.get_world_size()
    return torch.clamp(num_instances / world_size, min=1).item()


class SparseInstCriterion(nn.Module):
    """Matches predictions to targets and returns the unweighted loss terms.

    `weight_dict` holds the weight of each term; `total_loss` sums the weighted terms.
    All losses are computed in float32, with autocast disabled.
    """

    def __init__(self, matcher: HungarianMatcher | None = None, weight_dict: dict[str, float] | None = None):
        super().__init__()
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        unknown = set(self.weight_dict) - set(DEFAULT_WEIGHTS)
        if not self.weight_dict or unknown:
            raise ValueError(f"weight_dict must weight some of {sorted(DEFAULT_WEIGHTS)}; "
                             f"got {sorted(self.weight_dict)}")

    @staticmethod
    def _matched_query_index(indices: MatchIndices, device: torch.device) -> tuple[Tensor, Tensor]:
        """(batch index [M], query index [M]) of the matched predictions, M = total matches."""
        batch_idx = torch.cat([torch.full_like(pred, b) for b, (pred, _) in enumerate(indices)])
        query_idx = torch.cat([pred for pred, _ in indices])
        return batch_idx.to(device), query_idx.to(device)

    def loss_labels(self, pred_logits: Tensor, targets: list[dict[str, Tensor]], indices: MatchIndices,
                    num_instances: float) -> Tensor:
        """Sigmoid focal loss (alpha 0.25, gamma 2) over all queries; pred_logits [B, N, C] float32."""
        batch_idx, query_idx = self._matched_query_index(indices, pred_logits.device)
        matched_labels = torch.cat([t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)])
        one_hot = torch.zeros_like(pred_logits)                               # [B, N, C]
        one_hot[batch_idx, query_idx, matched_labels.to(pred_logits.device)] = 1.0
        return sigmoid_focal_loss(pred_logits, one_hot, alpha=0.25, gamma=2.0, reduction="sum") / num_instances

    def loss_masks(self, pred_masks: Tensor, pred_scores: Tensor, targets: list[dict[str, Tensor]],
                   indices: MatchIndices, num_instances: float) -> dict[str, Tensor]:
        """Dice, pixel BCE and IoU-aware objectness losses on the matched pairs.

        Args:
            pred_masks: [B, N, h, w] float32 mask logits.
            pred_scores: [B, N, 1] float32 objectness logits.
        """
        batch_idx, query_idx = self._matched_query_index(indices, pred_masks.device)
        if batch_idx.numel() == 0:
            # No instance in the batch: zero losses that still belong to the graph.
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero, "loss_objectness": pred_scores.sum() * 0.0}

        mask_size = tuple(pred_masks.shape[-2:])
        matched_targets = torch.cat([
            resize_target_masks(t["masks"][tgt].to(pred_masks.device), mask_size)
            for t, (_, tgt) in zip(targets, indices)])                        # [M, h, w]
        target_masks = matched_targets.flatten(1)                             # [M, h*w]
        mask_logits = pred_masks[batch_idx, query_idx].flatten(1)             # [M, h*w]
        score_logits = pred_scores[batch_idx, query_idx, 0]                   # [M]

        with torch.no_grad():
            iou_targets = binarised_mask_iou(mask_logits, target_masks)        # [M]
        return {
            "loss_mask": F.binary_cross_entropy_with_logits(mask_logits, target_masks, reduction="mean"),
            "loss_dice": dice_loss(mask_logits, target_masks).sum() / num_instances,
            "loss_objectness": F.binary_cross_entropy_with_logits(score_logits, iou_targets, reduction="mean"),
        }

    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Compute the unweighted loss terms.

        Args:
            outputs: "pred_logits" [B, N, C] class logits, "pred_scores" [B, N, 1] objectness logits and
                "pred_masks" [B, N, H/4, W/4] mask logits, for a padded input batch [B, 3, H, W].
            targets: B dicts with "labels" int64 [K_b] in 0..C-1 and "masks" bool [K_b, H, W] at the
                padded input resolution; K_b may be 0.

        Returns:
            float32 scalars "loss_ce", "loss_mask", "loss_dice" and "loss_objectness".
        """
        for key in ("pred_logits", "pred_scores", "pred_masks"):
            if key not in outputs:
                raise ValueError(f"outputs lack {key!r}; got keys {sorted(outputs)}")
        batch_size, num_queries = outputs["pred_logits"].shape[:2]
        if outputs["pred_scores"].shape != (batch_size, num_queries, 1):
            raise ValueError(f"pred_scores must be [B, N, 1] = [{batch_size}, {num_queries}, 1]; "
                             f"got {tuple(outputs['pred_scores'].shape)}")
        indices = self.matcher(outputs, targets)   # validates the targets
        device = outputs["pred_logits"].device
        num_instances = average_num_instances(targets, device)

        with torch.autocast(device_type=device.type, enabled=False):
            losses = {"loss_ce": self.loss_labels(outputs["pred_logits"].float(), targets, indices, num_instances)}
            losses.update(self.loss_masks(outputs["pred_masks"].float(), outputs["pred_scores"].float(),
                                          targets, indices, num_instances))
        return losses

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the loss terms named in `weight_dict` (scalar)."""
        missing = set(self.weight_dict) - set(losses)
        if missing:
            raise ValueError(f"loss term(s) {sorted(missing)} missing from {sorted(losses)}")
        return torch.stack([losses[name] * weight for name, weight in self.weight_dict.items()]).sum()
