"""ONNX export of a SparseInst network for one fixed input size.

The exported graph takes the raw float32 image batch (B, 3, H, W), RGB 0..255 (normalisation is inside),
and returns "pred_logits" (B, N, C), "pred_scores" (B, N, 1) and "pred_masks" (B, N, H/4, W/4), the
model's own outputs; post-processing stays in Python (`sparseinst_core.postprocess`).

Two parts of the network need help to export:
- the pyramid pooling module's `AdaptiveAvgPool2d`: ONNX has no adaptive pooling and the exporter refuses
  grids that do not divide the C5 map (e.g. 3x3 and 6x6 bins of a 20x27 map at 640x864). With the input
  size fixed, each adaptive pool is exactly a pair of averaging matrices, pooled = P_h @ x @ P_w^T, which
  `StaticAdaptiveAvgPool2d` computes;
- torchvision's deformable convolution, exported as ONNX `DeformConv` (opset 19).

The command line is `python -m sparseinst_core.export` (`sparseinst_core.tools.export`); backends that
export on their own keep the files in the export cache (`cached_export`).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from ..io.onnx_format import INPUT_NAME, OUTPUT_NAMES, write_metadata
from ..model import SIZE_DIVISIBILITY, SparseInst
from .export_cache import ExportCache, cache_key, model_fingerprint
from .optimize import fold_batch_norms

MIN_OPSET = 17
DEFORM_CONV_OPSET = 19  # first opset with DeformConv
# Part of every cached export's key: raise it when a change here changes the exported graph.
EXPORT_FORMAT_VERSION = 1


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) averaging matrix of adaptive average pooling along one axis.

    Bin i covers [floor(i * in / out), ceil((i + 1) * in / out)), as PyTorch's adaptive pooling defines it.
    """
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class StaticAdaptiveAvgPool2d(nn.Module):
    """`AdaptiveAvgPool2d(output_size)` for one known input size, as two matrix products (exportable)."""

    def __init__(self, output_size: tuple[int, int], input_size: tuple[int, int]):
        super().__init__()
        self.input_size = tuple(input_size)
        self.output_size = tuple(output_size)
        self.register_buffer("rows", adaptive_pool_matrix(input_size[0], output_size[0]).float())    # (h, H)
        self.register_buffer("cols", adaptive_pool_matrix(input_size[1], output_size[1]).float().t())  # (W, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"this pooling was built for {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        return torch.matmul(torch.matmul(self.rows, x), self.cols)   # (B, C, H, W) -> (B, C, h, w)


def replace_adaptive_pooling(model: SparseInst, image_size: tuple[int, int]) -> int:
    """Swap the encoder's adaptive pools for `StaticAdaptiveAvgPool2d` at the C5 size of `image_size`."""
    c5_size = (image_size[0] // SIZE_DIVISIBILITY, image_size[1] // SIZE_DIVISIBILITY)
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                size = child.output_size
                size = (size, size) if isinstance(size, int) else tuple(size)
                setattr(module, name, StaticAdaptiveAvgPool2d(size, c5_size))
                replaced += 1
    return replaced


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                            dilation_h, dilation_w, groups, offset_groups, use_mask):
    """torchvision::deform_conv2d -> ONNX DeformConv (same offset layout: (dy, dx) per kernel tap)."""
    from torch.onnx import symbolic_helper

    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups, use_mask = (
        symbolic_helper._maybe_get_const(v, "i")
        for v in (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups, use_mask))
    kernel = symbolic_helper._get_tensor_sizes(weight)[-2:]
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op("DeformConv", *inputs, kernel_shape_i=kernel, strides_i=[stride_h, stride_w],
                pads_i=[pad_h, pad_w, pad_h, pad_w], dilations_i=[dilation_h, dilation_w],
                group_i=groups, offset_group_i=offset_groups)


class _ExportWrapper(nn.Module):
    """Returns the model's dict as a tuple in `OUTPUT_NAMES` order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        outputs = self.model(images)
        return tuple(outputs[name] for name in OUTPUT_NAMES)


def prepare_for_export(model: SparseInst, image_size: tuple[int, int]) -> SparseInst:
    """A CPU fp32 copy with batch norms folded and adaptive pooling made static for `image_size`."""
    height, width = image_size
    if height <= 0 or width <= 0 or height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY:
        raise ValueError(f"export size must be positive multiples of {SIZE_DIVISIBILITY}, got {height}x{width}")
    prepared = copy.deepcopy(model).float().cpu().eval()
    fold_batch_norms(prepared)
    replace_adaptive_pooling(prepared, image_size)
    prepared.requires_grad_(False)
    return prepared


def export_onnx(model: SparseInst, path: str | Path, image_size: tuple[int, int], batch_size: int = 1,
                dynamic_batch: bool = False, opset: int | None = None) -> Path:
    """Export `model` for (batch_size, 3, H, W) float32 inputs to `path`; returns the path.

    The file records the preset, the model config and the input size as ONNX metadata, so
    `Predictor.from_onnx` needs nothing else. `dynamic_batch=True` leaves the batch dimension free.
    """
    has_deform = any(isinstance(m, DeformConv2d) for m in model.modules())
    if opset is None:
        opset = DEFORM_CONV_OPSET if has_deform else MIN_OPSET
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    if has_deform and opset < DEFORM_CONV_OPSET:
        raise ValueError(f"deformable convolutions need opset >= {DEFORM_CONV_OPSET} (ONNX DeformConv), got {opset}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    import onnx  # noqa: F401  (the exporter needs it; fail here with ImportError's own message)

    if has_deform:
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, DEFORM_CONV_OPSET)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prepared = prepare_for_export(model, image_size)
    example = torch.rand(batch_size, 3, *image_size) * 255
    dynamic_axes = ({INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
                    if dynamic_batch else None)
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy (TorchScript) exporter: the torch.export-based one needs the separate onnxscript
        # package. The model's input-shape checks are constant for a fixed size (TracerWarnings).
        warnings.simplefilter("ignore")
        torch.onnx.export(_ExportWrapper(prepared), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    write_metadata(path, model, image_size, batch_size if not dynamic_batch else None)
    return path


def check_export_input(images: torch.Tensor, input_size: tuple[int, int], batch_size: int | None) -> None:
    """A ValueError unless `images` (B, 3, H, W) fit an export's fixed size (and batch size, None: any)."""
    if tuple(images.shape[-2:]) != tuple(input_size):
        raise ValueError(f"this ONNX model takes {tuple(input_size)} inputs (fixed at export), got "
                         f"{tuple(images.shape[-2:])}; pad to that size or export another")
    if batch_size is not None and images.shape[0] != batch_size:
        raise ValueError(f"this ONNX model takes batches of {batch_size}, got {images.shape[0]}")


def cached_export(model: SparseInst, image_size: tuple[int, int], cache: ExportCache, batch_size: int = 1) -> Path:
    """The ONNX file of `model` for (batch_size, 3, H, W) inputs from `cache`, exported into it when missing.

    The key covers the model's config and weights, the size, the batch size, this exporter's format
    version and the torch and onnx versions, so a file is reused exactly when an export would be equal.
    """
    import onnx

    key = cache_key(model=model_fingerprint(model), size=list(image_size), batch_size=batch_size,
                    format=EXPORT_FORMAT_VERSION, torch=torch.__version__, onnx=onnx.__version__)
    name = f"{model.preset or 'model'}_{image_size[0]}x{image_size[1]}_b{batch_size}_{key}.onnx"
    return cache.get_or_create(name, lambda path: export_onnx(model, path, image_size, batch_size=batch_size))
