"""Predictor: numpy RGB images in, instances at the image's own resolution out.

Follows the official test-time procedure (`preprocess`): resize the shorter side, pad to a multiple of
32 with the pixel mean, run the network, post-process, sort by score.

The network runs on a backend (`backends`): PyTorch, optimised by default, or ONNX Runtime;
post-processing is the fast single-resize procedure by default, the official two-step one with
`postprocess="reference"`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import TEST_MAX_SIZE, TEST_MIN_SIZE, SparseInst, padded_shape
from .backends import create_backend
from .defaults import MASK_THRESHOLD, SCORE_THRESHOLD
from .postprocess import postprocess as postprocess_fast
from .postprocess import postprocess_reference
from .preprocess import pad_batch, resize_image, validate_image

POSTPROCESSORS = {"fast": postprocess_fast, "reference": postprocess_reference}


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


class Predictor:
    """Runs a SparseInst model on numpy images.

    >>> predictor = Predictor(model, min_size=640, max_size=853, score_threshold=0.3)
    >>> result = predictor(image)          # uint8 (H, W, 3) RGB -> Instances

    backend: "torch" (default) or "onnxruntime" (`onnx_path` is run when it exists, else `model` is
    exported there for `input_size`, by default the padded landscape `min_size` x `max_size`; images are
    padded to that fixed size; with neither `onnx_path` nor `input_size`, the model is exported once per
    padded input size met, so results equal the torch backend's).
    optimize: run the torch backend on
    `optimize_for_inference`'s copy of a SparseInst model (same outputs up to float rounding).
    precision: "fp32", "bf16" (CPU or GPU) or "fp16" (CUDA). postprocess: "fast" or "reference".
    fallback: a backend to use, with a warning, when `backend` cannot run here (e.g. "torch" when
    onnxruntime or its GPU provider is missing). device "auto" falls back from CUDA to the CPU.
    """

    def __init__(self, model: torch.nn.Module | None, min_size: int = TEST_MIN_SIZE, max_size: int = TEST_MAX_SIZE,
                 score_threshold: float = SCORE_THRESHOLD, mask_threshold: float = MASK_THRESHOLD,
                 device: str | torch.device | None = "auto", precision: str = "fp32", *,
                 backend: str = "torch", optimize: bool = True, postprocess: str = "fast",
                 onnx_path: str | Path | None = None, input_size: tuple[int, int] | None = None,
                 fallback: str | None = None):
        if min_size <= 0 or max_size < min_size:
            raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        if postprocess not in POSTPROCESSORS:
            raise ValueError(f"unknown postprocess {postprocess!r}; expected one of {list(POSTPROCESSORS)}")
        if backend == "onnxruntime" and input_size is None and onnx_path is not None and not Path(onnx_path).is_file():
            input_size = padded_shape(min_size, max_size)   # a file to keep: the padded landscape input size
        self.backend = create_backend(
            backend, model=model, onnx_path=onnx_path, device=device, precision=precision,
            optimize=optimize and isinstance(model, SparseInst), input_size=input_size, fallback=fallback)
        self.device = self.backend.device
        self.precision = precision
        self.model = model
        self.min_size, self.max_size = min_size, max_size
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.postprocess = POSTPROCESSORS[postprocess]
        config = model.config if model is not None else self.backend.config
        pixel_mean = config.pixel_mean if hasattr(config, "pixel_mean") else config["pixel_mean"]
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_onnx(cls, path: str | Path, min_size: int = TEST_MIN_SIZE, max_size: int = TEST_MAX_SIZE,
                  score_threshold: float = SCORE_THRESHOLD, mask_threshold: float = MASK_THRESHOLD, device: str | torch.device | None = "auto", precision: str = "fp32",
                  **options) -> "Predictor":
        """A predictor on an exported ONNX file alone (`sparseinst_core.export`), run by ONNX Runtime."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no ONNX file at {path}")
        return cls(None, min_size, max_size, score_threshold, mask_threshold, device, precision,
                   backend="onnxruntime", onnx_path=path, **options)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> float32 (3, h, w) resized to this predictor's input size."""
        return resize_image(image, self.min_size, self.max_size)

    def batch(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Pad to a common size, a multiple of 32 (or the backend's fixed size), with the pixel mean."""
        return pad_batch(tensors, self.pixel_mean, self.backend.input_size)

    @torch.inference_mode()
    def __call__(self, images):
        single = isinstance(images, np.ndarray)
        images = [validate_image(im) for im in ([images] if single else images)]
        if not images:
            return []
        tensors = [self.preprocess(im) for im in images]
        batch = self.batch(tensors)
        if self.backend.batch_size == 1 and len(images) > 1:  # a batch-1 ONNX model: one image at a time
            outputs = [self.backend(batch[i:i + 1]) for i in range(len(images))]
            outputs = {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
        else:
            outputs = self.backend(batch.to(self.device))
        results = []
        for index, (image, tensor) in enumerate(zip(images, tensors)):
            # The fast procedure sorts before resizing, sparing a copy of the full-size masks.
            sort = {"sort": True} if self.postprocess is postprocess_fast else {}
            scores, labels, masks = self.postprocess(
                outputs["pred_logits"][index], outputs["pred_scores"][index], outputs["pred_masks"][index],
                padded_size=batch.shape[-2:], image_size=tensor.shape[-2:], original_size=image.shape[:2],
                score_threshold=self.score_threshold, mask_threshold=self.mask_threshold, **sort)
            if not sort:
                order = torch.argsort(scores, descending=True, stable=True)
                scores, labels, masks = scores[order], labels[order], masks[order]
            results.append(Instances(scores.float().cpu().numpy(), labels.cpu().numpy(), masks.cpu().numpy()))
        return results[0] if single else results
