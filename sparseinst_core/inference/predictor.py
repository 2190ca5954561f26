"""Predictor: numpy RGB images in, instances at the image's own resolution out.

Follows the official test-time procedure (`preprocess`): resize the shorter side, pad to a multiple of
32 with the pixel mean, run the network, post-process, sort by score.

The network runs on a backend (`backends`): PyTorch, optimised by default, or ONNX Runtime;
post-processing is the fast single-resize procedure by default, pasting the `max_instances` best masks
into their boxes (`postprocess_crops`), the official two-step one with `postprocess="reference"`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model import TEST_MAX_SIZE, TEST_MIN_SIZE, SparseInst, padded_shape
from .backends import create_backend
from .defaults import MASK_THRESHOLD, MAX_INSTANCES, SCORE_THRESHOLD
from .mask_crops import MaskCrops
from .postprocess import best_instances, postprocess_crops, postprocess_reference
from .preprocess import pad_batch, resize_image, validate_image

POSTPROCESSORS = ("fast", "reference")


class Instances:
    """Detections of one image, sorted by descending score.

    scores (K,) float32; labels (K,) int64, contiguous class indices; the masks in two forms:
    `mask_crops` (`MaskCrops`, each mask stored inside boxes) and `masks` (K, H, W) bool at the input
    image's resolution. The predictor gives crops and builds the full masks only when `masks` is first
    read; `Instances(scores, labels, masks)` gives full masks, and crops are made from them when asked.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None, *,
                 mask_crops: MaskCrops | None = None):
        if (masks is None) == (mask_crops is None):
            raise ValueError("Instances need either masks (K, H, W) or mask_crops, not both")
        self.scores, self.labels = scores, labels
        self._masks, self._mask_crops = masks, mask_crops

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        return f"Instances({len(self)} instances, scores {np.round(self.scores, 3).tolist()})"

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool, built from the crops on first use."""
        if self._masks is None:
            self._masks = self._mask_crops.to_masks()
        return self._masks

    @property
    def mask_crops(self) -> MaskCrops:
        """The masks inside boxes, made from full masks on first use."""
        if self._mask_crops is None:
            self._mask_crops = MaskCrops.from_masks(self._masks)
        return self._mask_crops

    @property
    def boxes(self) -> np.ndarray:
        """(K, 4) float32 xyxy boxes enclosing each mask (pixel edges: x1 is exclusive); zeros for an empty mask."""
        return self.mask_crops.instance_boxes().astype(np.float32)


class Predictor:
    """Runs a SparseInst model on numpy images.

    >>> predictor = Predictor(model, min_size=640, max_size=853, score_threshold=0.3)
    >>> result = predictor(image)          # uint8 (H, W, 3) RGB -> Instances

    backend: "torch" (default), "onnxruntime" or "openvino" (CPU): the ONNX engines run `onnx_path` when it
    exists, else `model` is exported there for `input_size`, by default the padded landscape `min_size` x
    `max_size`, and images are padded to that fixed size; with neither `onnx_path` nor `input_size`, the
    model is exported once per padded input size met, into the export cache (`cache_dir`, default
    `$SPARSEINST_CACHE_DIR` or `~/.cache/sparseinst`), so results equal the torch backend's.
    cuda_graphs: on CUDA, the torch backend replays a captured graph for an input shape seen twice among the
        last 8 calls. cpu_chunks: on the CPU, the torch backend runs a batch of several images as concurrent
        chunks, each on its share of the intra-op threads.
    optimize: run the torch backend on
    `optimize_for_inference`'s copy of a SparseInst model (same outputs up to float rounding).
    precision: "fp32", "bf16" (CPU or GPU) or "fp16" (CUDA). postprocess: "fast" or "reference".
    max_instances: at most this many instances per image, the best scores, kept before any mask is resized;
    the attribute `classes` (a set of labels, None for all) filters before that cut.
    fallback: a backend to use, with a warning, when `backend` cannot run here (e.g. "torch" when
    onnxruntime or its GPU provider is missing). device "auto" falls back from CUDA to the CPU.
    """

    def __init__(self, model: torch.nn.Module | None, min_size: int = TEST_MIN_SIZE, max_size: int = TEST_MAX_SIZE,
                 score_threshold: float = SCORE_THRESHOLD, mask_threshold: float = MASK_THRESHOLD,
                 device: str | torch.device | None = "auto", precision: str = "fp32", *,
                 backend: str = "torch", optimize: bool = True, postprocess: str = "fast",
                 onnx_path: str | Path | None = None, input_size: tuple[int, int] | None = None,
                 fallback: str | None = None, max_instances: int = MAX_INSTANCES,
                 cache_dir: str | Path | None = None, cuda_graphs: bool = True, cpu_chunks: bool = True):
        if min_size <= 0 or max_size < min_size:
            raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        if postprocess not in POSTPROCESSORS:
            raise ValueError(f"unknown postprocess {postprocess!r}; expected one of {list(POSTPROCESSORS)}")
        if max_instances < 0:
            raise ValueError(f"max_instances must be >= 0, got {max_instances}")
        if backend == "onnxruntime" and input_size is None and onnx_path is not None and not Path(onnx_path).is_file():
            input_size = padded_shape(min_size, max_size)   # a file to keep: the padded landscape input size
        self.backend = create_backend(
            backend, model=model, onnx_path=onnx_path, device=device, precision=precision,
            optimize=optimize and isinstance(model, SparseInst), input_size=input_size, fallback=fallback,
            cache_dir=cache_dir, cuda_graphs=cuda_graphs, cpu_chunks=cpu_chunks)
        self.device = self.backend.device
        self.precision = precision
        self.model = model
        self.min_size, self.max_size = min_size, max_size
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_instances = max_instances
        self.classes: frozenset[int] | None = None     # class filter (labels to keep), None: all; may change
        # one image's raw outputs -> scores, labels and masks (`MaskCrops`, or full masks for the reference)
        self.postprocess = postprocess_crops if postprocess == "fast" else postprocess_reference_by_score
        config = model.config if model is not None else self.backend.config
        pixel_mean = config.pixel_mean if hasattr(config, "pixel_mean") else config["pixel_mean"]
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_onnx(cls, path: str | Path, min_size: int = TEST_MIN_SIZE, max_size: int = TEST_MAX_SIZE,
                  score_threshold: float = SCORE_THRESHOLD, mask_threshold: float = MASK_THRESHOLD,
                  device: str | torch.device | None = "auto", precision: str = "fp32", **options) -> "Predictor":
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

    def padded_size(self, tensor: torch.Tensor) -> tuple[int, int]:
        """The network input size of a preprocessed (3, h, w) image: the backend's fixed size, else (h, w)
        rounded up to a multiple of 32."""
        return tuple(self.backend.input_size) if self.backend.input_size else padded_shape(*tensor.shape[-2:])

    @torch.inference_mode()
    def __call__(self, images):
        """Images of one padded size run as one batch; each padded size is a batch of its own, because the
        instance activation maps are normalised over the whole feature map: padding an image further than
        its own padded size would change its results."""
        single = isinstance(images, np.ndarray)
        images = [validate_image(im) for im in ([images] if single else images)]
        tensors = [self.preprocess(im) for im in images]
        groups: dict[tuple[int, int], list[int]] = {}      # padded size -> indices of its images
        for index, tensor in enumerate(tensors):
            groups.setdefault(self.padded_size(tensor), []).append(index)
        results: list[Instances | None] = [None] * len(images)
        for indices in groups.values():
            batch = self.batch([tensors[i] for i in indices])                      # (B, 3, H, W)
            outputs = self.forward(batch)
            for slot, index in enumerate(indices):
                results[index] = self.instances({key: value[slot] for key, value in outputs.items()},
                                                 padded_size=batch.shape[-2:], image_size=tensors[index].shape[-2:],
                                                 original_size=images[index].shape[:2])
        return results[0] if single else results

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's raw outputs for a (B, 3, H, W) batch of one padded size."""
        if self.backend.batch_size == 1 and len(batch) > 1:   # a batch-1 ONNX model: one image at a time
            outputs = [self.backend(batch[i:i + 1]) for i in range(len(batch))]
            return {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
        return self.backend(batch)             # the backend moves it (through pinned memory on CUDA)

    def instances(self, outputs: dict[str, torch.Tensor], **sizes) -> Instances:
        """One image's raw outputs -> its `Instances`; `sizes`: padded_size, image_size, original_size."""
        scores, labels, masks = self.postprocess(
            outputs["pred_logits"], outputs["pred_scores"], outputs["pred_masks"], **sizes,
            score_threshold=self.score_threshold, mask_threshold=self.mask_threshold,
            max_instances=self.max_instances, classes=self.classes)
        scores, labels = scores.float().cpu().numpy(), labels.cpu().numpy()
        if isinstance(masks, MaskCrops):
            return Instances(scores, labels, mask_crops=masks.numpy())
        return Instances(scores, labels, masks.cpu().numpy())


def postprocess_reference_by_score(*arguments, max_instances: int = MAX_INSTANCES, classes: frozenset[int] | None = None,
                                   **keywords):
    """`postprocess_reference` sorted by descending score (stable), the `max_instances` best in `classes`."""
    scores, labels, masks = postprocess_reference(*arguments, **keywords)
    order = best_instances(scores, labels, max_instances, classes)
    return scores[order], labels[order], masks[order]
