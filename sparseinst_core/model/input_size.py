"""The network's input geometry: the test-time resize rule and the padding the strides require.

One rule for every path: the predictor (hence the node and the evaluation) and the training-time
multi-scale resize compute sizes here.
"""
from __future__ import annotations

# The stride of C5: an input whose sides are multiples of it maps onto whole feature-map cells.
SIZE_DIVISIBILITY = 32


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Shorter side to `min_size`, longer side capped at `max_size`, aspect kept (detectron2's rounding)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def padded_shape(height: int, width: int, divisor: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """The smallest (H, W) >= (height, width) that are multiples of `divisor`."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor
