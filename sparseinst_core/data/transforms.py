"""Training and test transforms on (image, target) pairs, built from torchvision.transforms.v2.

Training only: evaluation and inference resize through the predictor (`inference.preprocess`), and the
sizes of both come from one rule (`model.input_size.resized_shape`).

The image is a tv_tensors.Image (3, H, W) uint8 RGB and target["masks"] a tv_tensors.Mask (K, H, W) bool,
so every geometric transform moves image and masks together; other target entries pass through.
The training recipe follows the official SparseInst dataset mapper: horizontal flip; for half of the
images a resize of the shorter side to one of 400/500/600 followed by a random crop of absolute size
[384, 600] x [384, 600]; then a multi-scale resize of the shorter side with a cap on the longer side.
The pipeline ends by converting the image to float32 (values kept in 0..255); instances whose mask
became empty are dropped afterwards with remove_empty_instances.
"""
from __future__ import annotations

from typing import Any, Sequence

import math

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..model import TEST_MAX_SIZE, resized_shape

TRAIN_MIN_SIZES = (416, 448, 480, 512, 544, 576, 608, 640)
TRAIN_MAX_SIZE = TEST_MAX_SIZE
CROP_PRE_RESIZE_SIZES = (400, 500, 600)
CROP_SIZE_RANGE = (384, 600)
CROP_PROBABILITY = 0.5


class RandomSizeCrop(v2.Transform):
    """Crops a random window whose height and width are each drawn uniformly from [min_size, max_size]
    (integers, both ends included) and clipped to the image, at a uniformly random position
    (detectron2's "absolute_range" crop)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _query_size(flat_inputs)
        crop_height = _randint(min(height, self.min_size), min(height, self.max_size))
        crop_width = _randint(min(width, self.min_size), min(width, self.max_size))
        return {"top": _randint(0, height - crop_height), "left": _randint(0, width - crop_width),
                "height": crop_height, "width": crop_width}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class ResizeShortestEdge(v2.Transform):
    """Resizes so the shorter side is one of min_sizes (drawn uniformly) unless that would make the longer
    side exceed max_size, in which case the longer side becomes max_size. Images are resized bilinearly
    with antialiasing, masks with pixel-centre-aligned nearest neighbour (NEAREST_EXACT): plain NEAREST,
    torchvision's default for masks, shifts them by up to half an output pixel against the image."""

    def __init__(self, min_sizes: Sequence[int], max_size: int | None = None):
        super().__init__()
        if not min_sizes or min(min_sizes) <= 0:
            raise ValueError(f"min_sizes must be positive sizes, got {list(min_sizes)}")
        self.min_sizes = list(min_sizes)
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _query_size(flat_inputs)
        min_size = self.min_sizes[_randint(0, len(self.min_sizes) - 1)]
        return {"size": list(resized_shape(height, width, min_size, self.max_size or math.inf))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def remove_empty_instances(target: dict) -> dict:
    """A copy of target without the instances whose mask has no pixel (e.g. cropped away), as plain tensors."""
    keep = target["masks"].flatten(1).any(dim=1)          # [K]
    target = dict(target)
    target["masks"] = target["masks"].as_subclass(torch.Tensor)[keep]
    target["labels"] = target["labels"][keep]
    return target


def build_train_transforms(min_sizes: Sequence[int] = TRAIN_MIN_SIZES, max_size: int = TRAIN_MAX_SIZE,
                           crop_probability: float = CROP_PROBABILITY,
                           crop_pre_resize_sizes: Sequence[int] = CROP_PRE_RESIZE_SIZES,
                           crop_size_range: tuple[int, int] = CROP_SIZE_RANGE) -> v2.Compose:
    """Flip, crop for crop_probability of the images, multi-scale resize (shorter side from min_sizes,
    longer side <= max_size), float32 conversion."""
    if not 0.0 <= crop_probability <= 1.0:
        raise ValueError(f"crop_probability must be in [0, 1], got {crop_probability}")
    crop = v2.Compose([
        ResizeShortestEdge(crop_pre_resize_sizes),
        RandomSizeCrop(*crop_size_range),
    ])
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([crop], p=crop_probability),
        ResizeShortestEdge(min_sizes, max_size),
        v2.ToDtype(torch.float32, scale=False),
    ])


def _query_size(flat_inputs: list[Any]) -> tuple[int, int]:
    sizes = {tuple(F.get_size(inpt)) for inpt in flat_inputs
             if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask))}
    if len(sizes) != 1:
        raise ValueError(f"expected one image size among the image and masks, found {sorted(sizes)}")
    return sizes.pop()


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high], from torch's generator so torch.manual_seed controls it."""
    return int(torch.randint(low, high + 1, ()))
