"""From raw decoder tensors to instances: the official SparseInst test-time procedure.

score = sqrt(sigmoid(class) * sigmoid(objectness)), best class per query, threshold, rescore by
maskness, upsample masks to the padded input, crop the padding, resize to the original image, binarise.
No NMS and no sorting here: queries are one-to-one with objects by training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_scores(pred_logits: torch.Tensor, pred_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) class logits, (N, 1) objectness logits -> best score (N,) and its label (N,)."""
    scores = torch.sqrt(pred_logits.sigmoid() * pred_scores.sigmoid())   # (N, C)
    return scores.max(dim=-1)


def maskness(mask_probs: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """Mean probability inside each binarised mask: (K, h, w) -> (K,)."""
    binary = (mask_probs > mask_threshold).float()
    return (mask_probs * binary).sum((1, 2)) / (binary.sum((1, 2)) + 1e-6)


def postprocess_reference(pred_logits, pred_scores, pred_masks, padded_size, image_size, original_size,
                          score_threshold: float, mask_threshold: float):
    """One image, exactly as the official implementation.

    pred_logits (N, C), pred_scores (N, 1), pred_masks (N, Hp/4, Wp/4) logits of one image;
    padded_size (Hp, Wp) of the network input, image_size (h, w) of the resized image before padding,
    original_size (H, W). Returns scores (K,), labels (K,), masks (K, H, W) bool, in query order.
    """
    pred_logits, pred_scores, pred_masks = (t.float() for t in (pred_logits, pred_scores, pred_masks))
    scores, labels = instance_scores(pred_logits, pred_scores)
    keep = scores > score_threshold
    scores, labels = scores[keep], labels[keep]
    mask_probs = pred_masks[keep].sigmoid()                                # (K, Hp/4, Wp/4)
    if scores.numel() == 0:
        return scores, labels, torch.zeros((0, *original_size), dtype=torch.bool, device=scores.device)
    scores = scores * maskness(mask_probs, mask_threshold)
    h, w = image_size
    masks = F.interpolate(mask_probs[:, None], size=tuple(padded_size), mode="bilinear",
                          align_corners=False)[:, :, :h, :w]               # (K, 1, h, w)
    masks = F.interpolate(masks, size=tuple(original_size), mode="bilinear", align_corners=False)[:, 0]
    return scores, labels, masks > mask_threshold
