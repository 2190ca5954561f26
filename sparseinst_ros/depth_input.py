"""A colour frame's depth, checked: the registered depth image in metres and the intrinsics of both cameras.

Each way a depth frame can be unusable has a stable cause (a diagnostics key, and the key its log line is
throttled by); the frame then keeps its 2D outputs and gets no 3D. The checks are those behind yolo_ros
users' most frequent complaints: unregistered depth (another frame_id), wrong units (the encoding says the
unit: `16UC1` millimetres, `32FC1` metres, REP 118), and intrinsics of another resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from sparseinst_core.scene import PinholeCamera, depth_to_metres

from .conversions import UNKNOWN_ENCODING, Encoding, ImageConversionError, image_to_numpy

# The depth encodings (REP 118): 16UC1 millimetres, 32FC1 metres; one channel, nothing to convert.
DEPTH_LAYOUTS = {"16UC1": Encoding(np.dtype(np.uint16), 1, None), "32FC1": Encoding(np.dtype(np.float32), 1, None)}

# Stable causes of `DepthProblem`.
NO_DEPTH_IN_SLOP = "no_depth_in_slop"
NO_DEPTH_CAMERA_INFO = "no_depth_camera_info"
NO_CAMERA_INFO = "no_camera_info"
DEPTH_FRAME_ID = "depth_frame_id"
DEPTH_ENCODING = "depth_encoding"
DEPTH_INTRINSICS = "depth_intrinsics"
DEPTH_DATA = "depth_data"


class DepthProblem(ValueError):
    """Why a frame gets no 3D; `cause` is one of the stable keys above."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class PairedDepth:
    """The depth frame paired with a colour frame, as received."""

    image: Image
    camera_info: CameraInfo | None


@dataclass(frozen=True)
class RegisteredDepth:
    """A usable depth frame: (H_d, W_d) float32 metres (NaN: no measurement) and both cameras' intrinsics."""

    metres: np.ndarray
    depth_camera: PinholeCamera
    colour_camera: PinholeCamera
    frame_id: str


def _camera(info: CameraInfo, which: str) -> PinholeCamera:
    try:
        return PinholeCamera.from_k(info.k, info.width, info.height)
    except ValueError as error:
        raise DepthProblem(DEPTH_INTRINSICS, f"the {which} camera_info is unusable: {error}") from None


def _depth_pixels(image: Image) -> np.ndarray:
    """The depth image's (H, W) array in its own encoding; DepthProblem for an unknown encoding or bad data."""
    try:
        return image_to_numpy(image, DEPTH_LAYOUTS)
    except ImageConversionError as error:
        cause = DEPTH_ENCODING if error.cause == UNKNOWN_ENCODING else DEPTH_DATA
        raise DepthProblem(cause, f"depth image: {error} (16UC1: millimetres, 32FC1: metres)") from None


def registered_depth(colour: Image, colour_info: CameraInfo | None, depth: PairedDepth | None,
                     colour_size: tuple[int, int]) -> RegisteredDepth:
    """The checked depth of the colour frame `colour` (decoded size `colour_size`: height, width); raises
    DepthProblem naming the cause."""
    if depth is None:
        raise DepthProblem(NO_DEPTH_IN_SLOP, "no depth image within depth_slop of the colour image's stamp "
                           "(is the depth stream running, with the colour image's stamps?)")
    if colour_info is None:
        raise DepthProblem(NO_CAMERA_INFO, "no camera_info for the colour image: 3D needs its intrinsics")
    if depth.camera_info is None:
        raise DepthProblem(NO_DEPTH_CAMERA_INFO, "no camera_info for the depth image (depth/camera_info)")
    if depth.image.header.frame_id != colour.header.frame_id:
        raise DepthProblem(DEPTH_FRAME_ID, f"the depth image's frame_id {depth.image.header.frame_id!r} differs "
                           f"from the colour image's {colour.header.frame_id!r}: the depth must be registered to "
                           "the colour camera (RealSense: align_depth.enable:=true and aligned_depth_to_color; "
                           "else depth_image_proc/register)")
    pixels = _depth_pixels(depth.image)
    colour_camera, depth_camera = _camera(colour_info, "colour"), _camera(depth.camera_info, "depth")
    for camera, size, which in ((colour_camera, colour_size, "colour"), (depth_camera, pixels.shape, "depth")):
        if (camera.height, camera.width) != tuple(size):
            raise DepthProblem(DEPTH_INTRINSICS, f"the {which} camera_info describes {camera.width}x{camera.height} "
                               f"but the {which} image is {size[1]}x{size[0]}")
    metres = depth_to_metres(pixels, depth.image.encoding)          # NaN, inf, 0: no measurement
    return RegisteredDepth(metres, depth_camera, colour_camera, depth.image.header.frame_id)
