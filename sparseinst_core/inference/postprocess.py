"""From raw decoder tensors to instances: the official SparseInst test-time procedure, and fast ones.

score = sqrt(sigmoid(class) * sigmoid(objectness)), best class per query, threshold, rescore by
maskness, upsample masks to the padded input, crop the padding, resize to the original image, binarise.
No NMS: queries are one-to-one with objects by training.

`postprocess_reference` does exactly that. `postprocess` gives the same scores and labels bit for bit
and the same masks up to boundary pixels, with a single interpolation from the 1/4-resolution map straight
to the original image (the two bilinear resizes of the reference compose to one affine coordinate map),
written in chunks directly into a boolean result. `postprocess_crops` computes that same single
interpolation only inside boxes that hold every pixel it can set, after keeping the `max_instances`
best scores, and returns the masks as `MaskCrops`: its cost follows the instances kept and their extents,
not the image size (as Mask R-CNN pastes its masks into their boxes).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .defaults import MAX_INSTANCES
from .mask_crops import MaskCrops
from .mask_paste import axis_maps, binarise, crop_boxes, paste_crops

# Float elements per interpolation chunk on the CPU (16 MB): large enough to amortise the call, small
# enough that the chunk is still in cache when it is thresholded.
CPU_CHUNK_ELEMENTS = 1 << 22


def instance_scores(pred_logits: torch.Tensor, pred_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) class logits, (N, 1) objectness logits -> best score (N,) and its label (N,)."""
    scores = torch.sqrt(pred_logits.sigmoid() * pred_scores.sigmoid())   # (N, C)
    return scores.max(dim=-1)


def maskness_fast(mask_probs: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """`maskness` from a precomputed binary mask, with no float copy of it: (K, h, w) -> (K,).

    Sums the same float values in the same order as `maskness`, so the result is bit-identical (the
    product with the bool mask is cast on the fly; torch.where would take three times as long on the
    CPU); the pixel counts are exact integers, summed as bytes into int32 (a bool sum widens to int64 first).
    """
    counts = binary.view(torch.uint8).sum((1, 2), dtype=torch.int32)
    if mask_probs.device.type == "cpu" and mask_probs.dtype == torch.float32 and not mask_probs.requires_grad:
        # numpy multiplies float32 by bool in SIMD, torch casts element by element: 2.5 against 27 ms for
        # 100 masks of 161x214; the same products, summed by torch in the same order
        inside = torch.from_numpy(np.multiply(mask_probs.numpy(), binary.numpy(), dtype=np.float32))
    else:
        inside = mask_probs * binary
    return inside.sum((1, 2)) / (counts.to(mask_probs.dtype) + 1e-6)


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


def image_window(mask_probs: torch.Tensor, image_size) -> torch.Tensor:
    """(K, Hp/4, Wp/4) -> (K, rows, cols): the top-left part of the 1/4 map that covers the resized image
    (h, w), plus one row/column, the right neighbour of its last samples."""
    h, w = image_size
    return mask_probs[:, :min(mask_probs.shape[-2], math.ceil(h / 4) + 1), :min(mask_probs.shape[-1], math.ceil(w / 4) + 1)]


def resize_masks_to_original(mask_probs: torch.Tensor, image_size, original_size, mask_threshold: float,
                             chunk_elements: int | None = None) -> torch.Tensor:
    """(K, Hp/4, Wp/4) probabilities -> (K, H, W) bool masks of the original image, in one resize.

    The reference maps an output pixel y of the original image (height H) to y_r = (y + 0.5) h / H - 0.5
    in the resized image (height h, the unpadded part of the padded input Hp), and y_r to
    (y_r + 0.5) / 4 - 0.5 on the 1/4-resolution map. Composed: (y + 0.5) h / (4 H) - 0.5, i.e. bilinear
    sampling with scale factor 4 H / h from the top-left crop of the 1/4 map that covers the image (plus
    one row/column, the right neighbour of the last sample). Values differ from the two-step result only
    by the smoothing of the intermediate resize, so only pixels right at the threshold can flip.
    """
    (h, w), (H, W) = image_size, original_size
    crop = image_window(mask_probs, image_size)[:, None]                   # (K, 1, rows, cols)
    masks = torch.empty((mask_probs.shape[0], H, W), dtype=torch.bool, device=mask_probs.device)
    if chunk_elements is None:
        chunk_elements = CPU_CHUNK_ELEMENTS if mask_probs.device.type == "cpu" else mask_probs.numel() * H * W
    chunk = max(1, chunk_elements // (H * W))
    for start in range(0, mask_probs.shape[0], chunk):
        # aten's kernel takes the output size and the scale separately: the scale fixes the coordinate
        # map, the size fixes the output, so no crop of the result is needed.
        resized = torch.ops.aten.upsample_bilinear2d(crop[start:start + chunk], [H, W], False, 4.0 * H / h, 4.0 * W / w)
        binarise(resized[:, 0], mask_threshold, masks[start:start + chunk])          # (k, H, W) bool
    return masks


def scored_queries(pred_logits, pred_scores, pred_masks, padded_size, score_threshold: float,
                   mask_threshold: float):
    """The queries above `score_threshold`, in query order: scores rescored by maskness (K,), labels (K,),
    mask probabilities (K, Hp/4, Wp/4) and their binarisation (K, Hp/4, Wp/4) bool."""
    if tuple(padded_size) != (4 * pred_masks.shape[-2], 4 * pred_masks.shape[-1]):
        raise ValueError(f"pred_masks of size {tuple(pred_masks.shape[-2:])} are not 1/4 of the padded "
                         f"input {tuple(padded_size)}")
    scores, labels = instance_scores(pred_logits.float(), pred_scores.float())
    keep = torch.nonzero(scores > score_threshold).squeeze(1)
    kept = pred_masks if len(keep) == len(pred_masks) else pred_masks.index_select(0, keep)   # no copy of all
    mask_probs = kept.float().sigmoid()                                     # (K, Hp/4, Wp/4)
    binary = binarise(mask_probs, mask_threshold)
    return scores[keep] * maskness_fast(mask_probs, binary), labels[keep], mask_probs, binary


def postprocess(pred_logits, pred_scores, pred_masks, padded_size, image_size, original_size,
                score_threshold: float, mask_threshold: float, sort: bool = False):
    """Fast `postprocess_reference`: same arguments, same scores and labels, masks equal up to boundary pixels.

    Everything stays on the tensors' device; only the queries above `score_threshold` are ever
    resized. Returns scores (K,), labels (K,), masks (K, H, W) bool, in query order, or by descending
    score (stable) with `sort=True`, sorted before the masks are resized.
    """
    scores, labels, mask_probs, _ = scored_queries(pred_logits, pred_scores, pred_masks, padded_size,
                                                   score_threshold, mask_threshold)
    if sort:
        order = torch.argsort(scores, descending=True, stable=True)
        scores, labels, mask_probs = scores[order], labels[order], mask_probs[order]
    return scores, labels, resize_masks_to_original(mask_probs, image_size, original_size, mask_threshold)


def best_instances(scores: torch.Tensor, labels: torch.Tensor, max_instances: int,
                   classes: frozenset[int] | None = None) -> torch.Tensor:
    """Indices of the `max_instances` best scores (descending, stable) among the labels in `classes`
    (None: all): the selection made before any mask is resized."""
    order = torch.argsort(scores, descending=True, stable=True)
    if classes is not None:
        wanted = torch.as_tensor(sorted(classes), dtype=labels.dtype, device=labels.device)
        order = order[torch.isin(labels[order], wanted)]
    return order[:max_instances]


def postprocess_crops(pred_logits, pred_scores, pred_masks, padded_size, image_size, original_size,
                      score_threshold: float, mask_threshold: float, max_instances: int = MAX_INSTANCES,
                      classes: frozenset[int] | None = None):
    """`postprocess` for the `max_instances` best scores, masks as crops: scores and labels equal
    `postprocess(..., sort=True)[:max_instances]`, masks equal inside the crops and False outside
    (up to pixels at the threshold, where float rounding of the products can differ). With `classes`,
    only instances of those labels are kept (before the `max_instances` cut).

    Returns scores (K,), labels (K,) by descending score and `MaskCrops` (values on the tensors' device).
    """
    scores, labels, mask_probs, binary = scored_queries(pred_logits, pred_scores, pred_masks, padded_size,
                                                        score_threshold, mask_threshold)
    order = best_instances(scores, labels, max_instances, classes)
    query = order.cpu().numpy()                                            # (K',) the query of each instance
    probs = image_window(mask_probs, image_size)                           # (K, rows, cols), not copied
    rows, cols = axis_maps(tuple(original_size), tuple(image_size), tuple(probs.shape[-2:]))
    instances, boxes = crop_boxes(image_window(binary, image_size).cpu().numpy()[query], rows, cols)
    crop_order, values = paste_crops(probs, query[instances], boxes, rows, cols, mask_threshold)
    return scores[order], labels[order], MaskCrops(tuple(original_size), len(query), instances[crop_order],
                                                   boxes[crop_order], values)
