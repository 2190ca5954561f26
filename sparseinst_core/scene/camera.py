"""Pinhole intrinsics and depth images in metres: what a depth camera's messages mean, checked once.

Conventions (REP 103/118 and sensor_msgs/CameraInfo): the camera optical frame has x right, y down, z forward,
in metres; pixel (u, v) has its centre at (u, v) (column u, row v), so a point (x, y, z) projects to
u = fx x / z + cx, v = fy y / z + cy. Depth images are `16UC1` in millimetres or `32FC1` in metres; 0 (and
NaN, inf or negative values in `32FC1`) mean "no measurement".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEPTH_ENCODINGS = ("16UC1", "32FC1")
_ENCODING_DTYPES = {"16UC1": np.uint16, "32FC1": np.float32}
MILLIMETRES_PER_METRE = 1000.0


@dataclass(frozen=True)
class PinholeCamera:
    """The intrinsics of an undistorted (or rectified) image of `width` x `height` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all() and self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be finite and positive, got fx={self.fx}, fy={self.fy}")
        # The principal point lies in the image for any real camera: one outside it means K belongs to
        # another resolution than width x height (e.g. a 1280x720 calibration on a 640x480 stream).
        if not (-0.5 <= self.cx <= self.width - 0.5 and -0.5 <= self.cy <= self.height - 0.5):
            raise ValueError(f"principal point ({self.cx:g}, {self.cy:g}) lies outside the {self.width}x"
                             f"{self.height} image: the intrinsics are not those of this image size")

    @classmethod
    def from_k(cls, k: Sequence[float] | np.ndarray, width: int, height: int) -> "PinholeCamera":
        """From a 3x3 matrix K or CameraInfo's `k` (9 values, row-major) and the image size it describes."""
        matrix = np.asarray(k, dtype=np.float64)
        if matrix.size != 9:
            raise ValueError(f"K must have 9 values (3x3), got shape {matrix.shape}")
        matrix = matrix.reshape(3, 3)
        if not np.allclose(matrix[2], (0.0, 0.0, 1.0)) or matrix[1, 0] != 0.0:
            raise ValueError(f"K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {matrix.tolist()}")
        if matrix[0, 1] != 0.0:
            raise ValueError(f"K has a skew of {matrix[0, 1]:g}; only zero skew is supported")
        return cls(float(matrix[0, 0]), float(matrix[1, 1]), float(matrix[0, 2]), float(matrix[1, 2]),
                   int(width), int(height))

    @property
    def k(self) -> np.ndarray:
        """(3, 3) float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        """ValueError unless `image` (H, W[, C]) has this camera's size."""
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]} but its camera info describes "
                             f"{self.width}x{self.height}")


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image as received -> (H, W) float32 metres, NaN where there is no measurement.

    `16UC1`: uint16 millimetres, 0 invalid. `32FC1`: float32 metres; 0, NaN, inf and negative values are
    invalid (they never raise). A ValueError names an unknown encoding or a dtype that contradicts it.
    """
    if encoding not in _ENCODING_DTYPES:
        raise ValueError(f"unknown depth encoding {encoding!r}; expected one of {', '.join(DEPTH_ENCODINGS)}")
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"a depth image has one channel (H, W), got shape {depth.shape}")
    if depth.dtype != _ENCODING_DTYPES[encoding]:
        raise ValueError(f"{encoding} depth must be {np.dtype(_ENCODING_DTYPES[encoding]).name}, got {depth.dtype}")
    if encoding == "16UC1":
        metres = depth.astype(np.float32) / np.float32(MILLIMETRES_PER_METRE)
        metres[depth == 0] = np.nan
        return metres
    metres = depth.astype(np.float32, copy=True)
    with np.errstate(invalid="ignore"):
        metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres
