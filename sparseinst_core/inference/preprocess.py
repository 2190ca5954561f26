"""Images in, network input out: the one preprocessing rule of every inference path.

Follows the official test-time procedure: resize the shorter side to `min_size` (longer side at most
`max_size`, PIL bilinear as detectron2 does), then pad to a multiple of 32 with the pixel mean (the
official model pads the *normalised* image with zeros; this network normalises inside).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..model import padded_shape, resized_shape


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


def resize_image(image: np.ndarray, min_size: int, max_size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, h, w), resized as detectron2's ResizeShortestEdge (PIL bilinear)."""
    height, width = image.shape[:2]
    new_h, new_w = resized_shape(height, width, min_size, max_size)
    if (new_h, new_w) != (height, width):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    # np.require copies only read-only or strided inputs (torch cannot wrap those safely).
    return torch.from_numpy(np.require(image, requirements="CW")).permute(2, 0, 1).float()


def pad_batch(tensors: Sequence[torch.Tensor], pixel_mean: torch.Tensor,
              size: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, h_i, w_i) tensors -> (B, 3, H, W) padded at the right and bottom with `pixel_mean` (3, 1, 1).

    (H, W) is `size` when given (a backend's fixed input size), else the largest h and w rounded up to a
    multiple of 32.
    """
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    if size is not None:
        if height > size[0] or width > size[1]:
            raise ValueError(f"an image resized to {height}x{width} does not fit the backend's fixed input "
                             f"{size[0]}x{size[1]}; export the model for a larger size (e.g. the padded "
                             f"max_size x max_size for portrait images) or lower min_size/max_size")
        height, width = size
    else:
        height, width = padded_shape(height, width)
    batch = pixel_mean.view(3, 1, 1).expand(len(tensors), 3, height, width).clone()
    for slot, tensor in zip(batch, tensors):
        slot[:, :tensor.shape[1], :tensor.shape[2]] = tensor
    return batch
