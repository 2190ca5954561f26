"""Instance masks as crops: the pixels inside a mask's bounding box and where that box sits in the image.

Working on crops makes the cost of geometry and tracking follow the instances' areas, not the image size.
A full-image mask is the crop at (0, 0); `InstanceMask.tight` trims any mask to its bounding box. The
predictor's cropped masks (`inference.mask_crops.MaskCrops.instance_crop`) give box and crop directly:
`InstanceMask(crop, x0, y0)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class InstanceMask:
    """One instance's mask: mask (h, w) bool, whose pixel [0, 0] is image pixel (column x, row y)."""

    mask: np.ndarray
    x: int = 0
    y: int = 0

    def __post_init__(self):
        if self.mask.ndim != 2 or self.mask.dtype != bool:
            raise ValueError(f"a mask crop is a (h, w) bool array, got {self.mask.dtype} {self.mask.shape}")

    @classmethod
    def tight(cls, mask: np.ndarray, x: int = 0, y: int = 0) -> "InstanceMask":
        """The crop of `mask` (placed at (x, y)) to its bounding box; an empty mask gives a 0x0 crop."""
        mask = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            return cls(np.zeros((0, 0), bool), x, y)
        cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
        return cls(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], x + int(cols[0]), y + int(rows[0]))

    @cached_property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) with x1, y1 exclusive, in image pixels (made once: the tracker reads it per pair)."""
        return self.x, self.y, self.x + self.mask.shape[1], self.y + self.mask.shape[0]

    @cached_property
    def area(self) -> int:
        """Number of mask pixels (counted once)."""
        return int(np.count_nonzero(self.mask))

    def centre(self) -> np.ndarray:
        """(2,) float64 centre (x, y) of the bounding box, in pixel coordinates (pixel centres at integers)."""
        height, width = self.mask.shape
        return np.array([self.x + (width - 1) / 2.0, self.y + (height - 1) / 2.0])

    def shifted(self, dx: int, dy: int) -> "InstanceMask":
        """The same pixels moved by (dx, dy) image pixels (with the area, if counted: the tracker moves every
        track's mask each frame and compares it with several others)."""
        moved = InstanceMask(self.mask, self.x + int(dx), self.y + int(dy))
        if "area" in self.__dict__:
            moved.__dict__["area"] = self.__dict__["area"]          # the cached_property's own slot
        return moved

    def to_image(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool image of the mask; parts outside the image are dropped."""
        image = np.zeros((height, width), bool)
        x0, y0, x1, y1 = self.box
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx0 < cx1 and cy0 < cy1:
            image[cy0:cy1, cx0:cx1] = self.mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        return image


def mask_iou(a: InstanceMask, b: InstanceMask) -> float:
    """Intersection over union of two crops, counting the intersection on the overlap of their boxes only."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    intersection = 0
    if x0 < x1 and y0 < y1:
        intersection = int(np.count_nonzero(a.mask[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0]
                                            & b.mask[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]))
    union = a.area + b.area - intersection
    return intersection / union if union else 0.0


def masks_from_label_image(label_image: np.ndarray) -> dict[int, InstanceMask]:
    """A label image (H, W) of integer ids (0: background; the node's mono16 output) -> {id: its mask},
    in one pass over the image."""
    masks = {}
    for index, window in enumerate(ndimage.find_objects(label_image)):
        if window is not None:
            masks[index + 1] = InstanceMask(label_image[window] == index + 1, window[1].start, window[0].start)
    return masks
