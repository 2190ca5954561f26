"""Predictor: numpy RGB images in, instances at the image's own resolution out.

Follows the official test-time procedure: resize the shorter side to `min_size` (longer side at most
`max_size`, PIL bilinear as detectron2 does), pad to a multiple of 32 with the pixel mean (the official
model pads the *normalised* image with zeros), run the network, post-process, sort by score.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .model import SIZE_DIVISIBILITY
from .postprocess import postprocess_reference

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Instances:
    """Detections of one image, sorted by descending score."""

    scores: np.ndarray   # (K,) float32
    labels: np.ndarray   # (K,) int64, contiguous class indices
    masks: np.ndarray    # (K, H, W) bool at the input image's resolution

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def boxes(self) -> np.ndarray:
        """(K, 4) float32 xyxy boxes enclosing each mask (pixel edges: x1 is exclusive)."""
        boxes = np.zeros((len(self), 4), dtype=np.float32)
        for i, mask in enumerate(self.masks):
            ys = np.flatnonzero(mask.any(axis=1))
            xs = np.flatnonzero(mask.any(axis=0))
            if len(xs):
                boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return boxes


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Shorter side to `min_size`, longer side capped at `max_size`, aspect kept (detectron2's rounding)."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def padded_shape(height: int, width: int, divisor: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def validate_image(image) -> np.ndarray:
    """The predictor's input contract: uint8 numpy (H, W, 3) RGB with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}; scale to 0..255 and convert")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"expected an RGB image (H, W, 3), got a grey image of shape {image.shape}; "
                         "convert it, e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)")
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError(f"expected an RGB image (H, W, 3), got 4 channels {image.shape}; drop alpha, "
                         "e.g. cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has zero size: {image.shape}")
    return image


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) picks CUDA when available, else the CPU; 'cuda' without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; "
                           "use device='auto' to fall back to the CPU")
    return device


def autocast_context(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; on the CPU use bf16")
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


class Predictor:
    """Runs a SparseInst model on numpy images.

    >>> predictor = Predictor(model, min_size=640, max_size=853, score_threshold=0.3)
    >>> result = predictor(image)          # uint8 (H, W, 3) RGB -> Instances
    """

    def __init__(self, model: torch.nn.Module, min_size: int = 640, max_size: int = 853,
                 score_threshold: float = 0.3, mask_threshold: float = 0.45,
                 device: str | torch.device | None = "auto", precision: str = "fp32"):
        if min_size <= 0 or max_size < min_size:
            raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        self.device = resolve_device(device)
        autocast_context(self.device, precision)  # validates the combination now, not at the first frame
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.min_size, self.max_size = min_size, max_size
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.pixel_mean = torch.tensor(model.config.pixel_mean, dtype=torch.float32).view(3, 1, 1)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> float32 (3, h, w) resized as detectron2's ResizeShortestEdge (PIL bilinear)."""
        height, width = image.shape[:2]
        new_h, new_w = resized_shape(height, width, self.min_size, self.max_size)
        if (new_h, new_w) != (height, width):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        # np.require copies only read-only or strided inputs (torch cannot wrap those safely).
        return torch.from_numpy(np.require(image, requirements="CW")).permute(2, 0, 1).float()

    def batch(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Pad to a common size, a multiple of 32, with the pixel mean (zero after normalisation)."""
        height = max(t.shape[1] for t in tensors)
        width = max(t.shape[2] for t in tensors)
        height, width = padded_shape(height, width)
        batch = self.pixel_mean.expand(len(tensors), 3, height, width).clone()
        for slot, tensor in zip(batch, tensors):
            slot[:, :tensor.shape[1], :tensor.shape[2]] = tensor
        return batch

    @torch.inference_mode()
    def __call__(self, images):
        single = isinstance(images, np.ndarray)
        images = [validate_image(im) for im in ([images] if single else images)]
        if not images:
            return []
        tensors = [self.preprocess(im) for im in images]
        batch = self.batch(tensors).to(self.device)
        with autocast_context(self.device, self.precision):
            outputs = self.model(batch)
        results = []
        for index, (image, tensor) in enumerate(zip(images, tensors)):
            scores, labels, masks = postprocess_reference(
                outputs["pred_logits"][index], outputs["pred_scores"][index], outputs["pred_masks"][index],
                padded_size=batch.shape[-2:], image_size=tensor.shape[-2:], original_size=image.shape[:2],
                score_threshold=self.score_threshold, mask_threshold=self.mask_threshold)
            order = torch.argsort(scores, descending=True, stable=True)
            results.append(Instances(scores[order].float().cpu().numpy(), labels[order].cpu().numpy(),
                                     masks[order].cpu().numpy()))
        return results[0] if single else results
