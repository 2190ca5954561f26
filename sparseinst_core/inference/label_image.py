"""Instances -> one label image: every pixel names the instance that owns it (0: none).

The label image and the per-instance summaries describe the same instances: instance `ids[i]` is exactly
the set of pixels whose value is ids[i], and its bounding box and pixel count are measured on that set.
Instances are painted in descending score order onto free pixels only, so where masks overlap the higher
score wins; an instance left with no pixel of its own is dropped. Ids are 1..N in descending score
order (contiguous); `InstanceLabels.with_ids` gives other ids (e.g. a tracker's) afterwards.

Painting works crop by crop (`MaskCrops`), so the cost follows the instances' extents, and no full-size
mask is ever built. ROS-free: the node turns the result into its mono16 image and detections.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .defaults import MAX_INSTANCES
from .mask_crops import MaskCrops, crops_of

# a uint16 label image: 0 is background, so at most 65535 instances
MAX_LABEL = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class InstanceLabels:
    """Instances of one image in output form; row i of each array describes the instance with id ids[i]."""

    label_image: np.ndarray    # uint16 (H, W): 0 background, ids[i] instance i
    ids: np.ndarray            # int64 (N,), distinct, in 1..MAX_LABEL
    class_ids: np.ndarray      # int64 (N,)
    scores: np.ndarray         # float32 (N,), descending
    boxes: np.ndarray          # int64 (N, 4): x_min, y_min, x_max, y_max (inclusive pixel indices)
    pixel_counts: np.ndarray   # int64 (N,), each > 0

    def __len__(self) -> int:
        return len(self.scores)

    def with_ids(self, ids) -> InstanceLabels:
        """The same instances under other ids: (N,) distinct integers in 1..MAX_LABEL, row by row."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != self.ids.shape or len(np.unique(ids)) != len(ids) or (len(ids) and (
                ids.min() < 1 or ids.max() > MAX_LABEL)):
            raise ValueError(f"expected {len(self)} distinct ids in 1..{MAX_LABEL}, got {ids.tolist()}")
        lookup = np.zeros(int(max(self.ids.max(initial=0), 0)) + 1, dtype=np.uint16)   # old id -> new id
        lookup[self.ids] = ids
        return replace(self, label_image=lookup[self.label_image], ids=ids)

    def mask_crops(self) -> MaskCrops:
        """Each instance's pixels in the label image, one crop per instance in its box (for drawing)."""
        boxes = self.boxes + np.array([0, 0, 1, 1])                         # exclusive ends
        crops = [(self.label_image[y0:y1, x0:x1] == instance_id).ravel()
                 for instance_id, (x0, y0, x1, y1) in zip(self.ids.tolist(), boxes.tolist())]
        values = np.concatenate(crops) if crops else np.zeros(0, dtype=bool)
        return MaskCrops(self.label_image.shape, len(self), np.arange(len(self)), boxes, values)


def label_instances(result, allowed_classes: frozenset[int] | None = None,
                    max_instances: int = MAX_INSTANCES) -> InstanceLabels:
    """A predictor result -> `InstanceLabels` with ids 1..N.

    result: has scores (K,), labels (K,) and masks, as `mask_crops` (`Instances`) or (K, H, W) bool
    `masks`, in any order. Instances of classes outside `allowed_classes` are ignored; of the rest, the
    `max_instances` best scores are kept.
    """
    scores, labels = np.asarray(result.scores), np.asarray(result.labels)
    crops = crops_of(result)
    if not len(scores) == len(labels) == crops.num_instances:
        raise ValueError(f"expected scores (K,), labels (K,) and masks of K instances; got {np.shape(scores)}, "
                         f"{np.shape(labels)}, {crops.num_instances} masks")
    if not 0 <= max_instances <= MAX_LABEL:
        raise ValueError(f"max_instances must be in 0..{MAX_LABEL}, got {max_instances}")
    candidates = np.argsort(-scores.astype(np.float64), kind="stable")
    if allowed_classes is not None:
        candidates = candidates[np.isin(labels[candidates], list(allowed_classes))]
    candidates = candidates[:max_instances]

    order = np.argsort(crops.instances, kind="stable")                      # crops grouped by instance
    starts, ends = (np.searchsorted(crops.instances[order], np.arange(crops.num_instances), side=side)
                    for side in ("left", "right"))
    boxes, pieces = crops.boxes.tolist(), crops.crops
    label_image = np.zeros(crops.image_size, dtype=np.uint16)              # (H, W)
    kept, visible_boxes, pixel_counts = [], [], []
    for candidate in candidates.tolist():
        instance_id = len(kept) + 1
        count, low, high = 0, [np.inf, np.inf], [-1, -1]                    # visible pixels, their x/y range
        for crop in order[starts[candidate]:ends[candidate]].tolist():
            x0, y0, x1, y1 = boxes[crop]
            window = label_image[y0:y1, x0:x1]                              # a view: writes go to the image
            visible = pieces[crop] & (window == 0)
            rows = np.flatnonzero(visible.any(axis=1))
            if len(rows) == 0:                                              # hidden by higher scores, or empty
                continue
            window[visible] = instance_id
            cols = np.flatnonzero(visible.any(axis=0))
            count += int(np.count_nonzero(visible))
            low = [min(low[0], x0 + cols[0]), min(low[1], y0 + rows[0])]
            high = [max(high[0], x0 + cols[-1]), max(high[1], y0 + rows[-1])]
        if count:
            kept.append(candidate)
            visible_boxes.append((*low, *high))
            pixel_counts.append(count)
    kept = np.array(kept, dtype=np.int64)
    return InstanceLabels(label_image=label_image, ids=np.arange(1, len(kept) + 1),
                          class_ids=labels.astype(np.int64)[kept], scores=scores.astype(np.float32)[kept],
                          boxes=np.array(visible_boxes, dtype=np.int64).reshape(-1, 4),
                          pixel_counts=np.array(pixel_counts, dtype=np.int64))
