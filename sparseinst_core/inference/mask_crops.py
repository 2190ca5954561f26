"""Binary instance masks stored only inside boxes: the cropped form of a predictor's masks.

An instance's mask is the union of one or more crops, each a boolean array covering a box of the image;
outside its crops it is False. Post-processing writes crops directly (an instance whose mask has parts
far apart gets one crop per part), so memory and time follow the instances' extents, not K full images;
full (K, H, W) masks are built only where a caller asks for them (`to_masks`).

The crops of all instances live in one flat boolean array (`values`), each row-major in turn: one
device-to-host copy moves them all, and every crop is a view into it. `values` is a numpy array, or a
torch tensor where post-processing leaves it on its device (`numpy()` brings it to the host); the other
methods need numpy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskCrops:
    """K instance masks of an image of `image_size` (H, W), as P crops."""

    image_size: tuple[int, int]
    num_instances: int
    instances: np.ndarray   # (P,) int64: the instance (row of scores/labels) each crop belongs to
    boxes: np.ndarray       # (P, 4) int64: x0, y0, x1, y1 of each crop in image pixels (x1, y1 exclusive)
    values: np.ndarray      # (sum of crop areas,) bool: the crops, row-major, one after the other

    def __len__(self) -> int:
        return len(self.instances)

    @functools.cached_property
    def crops(self) -> list:
        """P boolean arrays (y1 - y0, x1 - x0): views into `values`."""
        heights = (self.boxes[:, 3] - self.boxes[:, 1]).tolist()
        widths = (self.boxes[:, 2] - self.boxes[:, 0]).tolist()
        crops, start = [], 0
        for height, width in zip(heights, widths):
            crops.append(self.values[start:start + height * width].reshape(height, width))
            start += height * width
        return crops

    def numpy(self) -> MaskCrops:
        """The same crops with `values` in host memory (one copy from the device for a torch tensor)."""
        if isinstance(self.values, np.ndarray):
            return self
        return MaskCrops(self.image_size, self.num_instances, self.instances, self.boxes, self.values.cpu().numpy())

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> MaskCrops:
        """(K, H, W) bool -> one crop per non-empty mask, its tight box (empty masks get no crop)."""
        masks = np.asarray(masks, dtype=bool)
        instances, boxes, crops = [], [], []
        for index, mask in enumerate(masks):
            rows = np.flatnonzero(mask.any(axis=1))
            if len(rows) == 0:
                continue
            y0, y1 = rows[0], rows[-1] + 1
            cols = np.flatnonzero(mask[y0:y1].any(axis=0))
            x0, x1 = cols[0], cols[-1] + 1
            instances.append(index)
            boxes.append((x0, y0, x1, y1))
            crops.append(mask[y0:y1, x0:x1].ravel())
        values = np.concatenate(crops) if crops else np.zeros(0, dtype=bool)
        return cls(tuple(masks.shape[1:]), len(masks), np.array(instances, dtype=np.int64),
                   np.array(boxes, dtype=np.int64).reshape(-1, 4), values)

    def to_masks(self) -> np.ndarray:
        """(K, H, W) bool full-image masks."""
        masks = np.zeros((self.num_instances, *self.image_size), dtype=bool)
        for instance, (x0, y0, x1, y1), crop in zip(self.instances.tolist(), self.boxes.tolist(), self.crops):
            masks[instance, y0:y1, x0:x1] |= crop
        return masks

    def instance_boxes(self) -> np.ndarray:
        """(K, 4) int64 x0, y0, x1, y1 (exclusive) enclosing each instance's set pixels; zeros when none."""
        lows = np.full((self.num_instances, 2), np.iinfo(np.int64).max, dtype=np.int64)
        highs = np.full((self.num_instances, 2), np.iinfo(np.int64).min, dtype=np.int64)
        for instance, (x0, y0, _, _), crop in zip(self.instances.tolist(), self.boxes.tolist(), self.crops):
            rows = np.flatnonzero(crop.any(axis=1))
            if len(rows):
                cols = np.flatnonzero(crop.any(axis=0))
                lows[instance] = np.minimum(lows[instance], (x0 + cols[0], y0 + rows[0]))
                highs[instance] = np.maximum(highs[instance], (x0 + cols[-1] + 1, y0 + rows[-1] + 1))
        boxes = np.concatenate([lows, highs], axis=1)
        boxes[highs[:, 0] < lows[:, 0]] = 0
        return boxes

    def instance_crop(self, instance: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """One instance's mask cropped to the box of its crops: ((x0, y0, x1, y1), bool (y1-y0, x1-x0))."""
        parts = np.flatnonzero(self.instances == instance)
        if len(parts) == 0:
            return (0, 0, 0, 0), np.zeros((0, 0), dtype=bool)
        boxes = self.boxes[parts]
        x0, y0 = boxes[:, :2].min(axis=0).tolist()
        x1, y1 = boxes[:, 2:].max(axis=0).tolist()
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for part, (bx0, by0, bx1, by1) in zip(parts.tolist(), boxes.tolist()):
            mask[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= self.crops[part]
        return (x0, y0, x1, y1), mask


def crops_of(result) -> MaskCrops:
    """The masks of a result as crops: its `mask_crops` (`Instances`), else made from its (K, H, W) `masks`."""
    return result.mask_crops if hasattr(result, "mask_crops") else MaskCrops.from_masks(np.asarray(result.masks))
