"""sensor_msgs Image / CompressedImage <-> numpy.

Incoming images are validated here (encoding, size, step, data length; a compressed image's size from its
header) before any pixel is touched, so a malformed message becomes an `ImageConversionError` whose
`cause` names the problem; the node counts errors per cause. `check_message` adds the node's limits on
the size of a frame (`check_frame_size`): its number of pixels and its aspect ratio.

Pixels are converted with cv_bridge where it is installed and otherwise with an equivalent numpy/OpenCV
path: colour conversions through `cv2.cvtColor` and 16-bit values scaled to 8 bits by 255/65535 with
rounding, exactly as cv_bridge's `convertTo` does.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from .image_header import ImageHeaderError, compressed_image_size

try:  # cv_bridge is part of a ROS 2 installation but not of the pip wheels
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None


class ImageConversionError(ValueError):
    """A message that cannot be turned into an image; `cause` is a short stable key for counting."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause = cause


# Stable causes of `ImageConversionError`, used as diagnostics keys.
UNKNOWN_ENCODING = "unknown_encoding"
BAD_STEP = "bad_step"
BAD_SIZE = "bad_size"
ZERO_SIZE = "zero_size"
CORRUPT_COMPRESSED = "corrupt_compressed"
ODD_WIDTH = "odd_width"
TOO_LARGE = "too_large"
DEGENERATE_SIZE = "degenerate_size"

MAX_INPUT_PIXELS = 4096 * 4096      # default limit: decoding is width x height x 3 bytes, whatever the data size
# The aspect-ratio limit: beyond it the model, which resizes the shorter side up and caps the longer one, sees
# a strip a few pixels thin (a 1x8000 line-scan row becomes 1x853), with nothing it could segment.
MAX_ASPECT_RATIO = 16


@dataclass(frozen=True)
class Encoding:
    """Memory layout of a sensor_msgs/Image encoding and how to turn it into RGB."""

    dtype: np.dtype
    channels: int
    to_rgb: int | None          # cv2 colour conversion code; None when already RGB
    pixels_per_group: int = 1   # packed 4:2:2: two neighbouring pixels share one chroma pair

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(_U8, 3, None),
    "bgr8": Encoding(_U8, 3, cv2.COLOR_BGR2RGB),
    "mono8": Encoding(_U8, 1, cv2.COLOR_GRAY2RGB),
    "rgba8": Encoding(_U8, 4, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(_U8, 4, cv2.COLOR_BGRA2RGB),
    "rgb16": Encoding(_U16, 3, None),
    "bgr16": Encoding(_U16, 3, cv2.COLOR_BGR2RGB),
    "mono16": Encoding(_U16, 1, cv2.COLOR_GRAY2RGB),
    "rgba16": Encoding(_U16, 4, cv2.COLOR_RGBA2RGB),
    "bgra16": Encoding(_U16, 4, cv2.COLOR_BGRA2RGB),
    # packed 4:2:2 from USB cameras: two bytes per pixel
    "yuv422": Encoding(_U8, 2, cv2.COLOR_YUV2RGB_UYVY, pixels_per_group=2),
    "yuv422_yuy2": Encoding(_U8, 2, cv2.COLOR_YUV2RGB_YUY2, pixels_per_group=2),
}

_bridge = CvBridge() if CvBridge is not None else None


def check_image(msg: Image, encodings: dict[str, Encoding] = ENCODINGS) -> Encoding:
    """The layout of `msg` after checking its header against its data (no pixel is touched, so this is
    cheap enough for a subscription callback); raises `ImageConversionError` naming the cause. `encodings`:
    those accepted (default: the colour images the model reads)."""
    encoding = encodings.get(msg.encoding)
    if encoding is None:
        raise ImageConversionError(
            UNKNOWN_ENCODING, f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(encodings)}")
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageConversionError(ZERO_SIZE, f"image has zero size ({width}x{height})")
    if width % encoding.pixels_per_group:
        raise ImageConversionError(
            ODD_WIDTH, f"{msg.encoding} is packed 4:2:2 (two pixels share their chroma), so its width must be even; "
                       f"got {width}x{height}")
    row_bytes = width * encoding.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            BAD_STEP, f"step {step} is smaller than width {width} x {encoding.bytes_per_pixel} bytes per "
                      f"pixel = {row_bytes} for {msg.encoding}")
    if len(msg.data) != step * height:
        raise ImageConversionError(
            BAD_SIZE, f"data has {len(msg.data)} bytes but step {step} x height {height} = {step * height}")
    return encoding


def check_compressed(msg: CompressedImage) -> tuple[int, int]:
    """The (height, width) of a JPEG or PNG image read from its header: the cheap part of validating a
    compressed image (decoding is the rest)."""
    if len(msg.data) == 0:
        raise ImageConversionError(ZERO_SIZE, f"compressed image ({msg.format or 'no format'}) has no data")
    try:
        height, width = compressed_image_size(msg.data)
    except ImageHeaderError as error:
        raise ImageConversionError(CORRUPT_COMPRESSED, f"{_undecodable(msg)}: {error}") from None
    if height == 0 or width == 0:
        raise ImageConversionError(ZERO_SIZE, f"compressed image has zero size ({width}x{height}) in its header")
    return height, width


def check_frame_size(height: int, width: int, max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Refuse a frame of more than `max_pixels` pixels, or one more elongated than MAX_ASPECT_RATIO."""
    if height * width > max_pixels:
        raise ImageConversionError(
            TOO_LARGE, f"image {width}x{height} has {height * width} pixels, more than max_input_pixels = {max_pixels}")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ImageConversionError(
            DEGENERATE_SIZE, f"image {width}x{height} is too elongated for the model: its longer side may be at most "
                             f"{MAX_ASPECT_RATIO} times its shorter (aspect-ratio limit {MAX_ASPECT_RATIO}:1)")


def check_message(msg: Image | CompressedImage, max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """The checks of a frame on arrival, cheap enough for a subscription callback: `check_image` or
    `check_compressed`, whichever fits the message, then `check_frame_size`."""
    if isinstance(msg, CompressedImage):
        height, width = check_compressed(msg)
    else:
        check_image(msg)
        height, width = msg.height, msg.width
    check_frame_size(height, width, max_pixels)


def image_to_numpy(msg: Image, encodings: dict[str, Encoding] = ENCODINGS) -> np.ndarray:
    """The pixels of `msg` in their own encoding: [H,W] or [H,W,C] of its dtype, native byte order.

    Validates the message first (`check_image`, with the `encodings` accepted); row padding (step > width *
    bytes per pixel) is allowed and dropped. The result may share memory with `msg.data`.
    """
    encoding = check_image(msg, encodings)
    height, width, step = msg.height, msg.width, msg.step
    row_bytes = width * encoding.bytes_per_pixel
    dtype = encoding.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    pixels = rows.view(dtype).reshape(height, width, encoding.channels)   # [H,W,C]
    if encoding.channels == 1:
        pixels = pixels[:, :, 0]                                           # [H,W]
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return pixels


def image_to_rgb(msg: Image) -> np.ndarray:
    """Any supported sensor_msgs/Image -> uint8 [H,W,3] RGB (the predictor's input)."""
    pixels = image_to_numpy(msg)   # validates, whichever path converts
    if _bridge is not None:
        return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    return _pixels_to_rgb(pixels, ENCODINGS[msg.encoding])


def _pixels_to_rgb(pixels: np.ndarray, encoding: Encoding) -> np.ndarray:
    if encoding.dtype == _U16:
        # 16 -> 8 bits like cv_bridge: scale by 255/65535 and round
        pixels = cv2.convertScaleAbs(np.ascontiguousarray(pixels), alpha=255.0 / 65535.0)
    if encoding.to_rgb is not None:
        return cv2.cvtColor(np.ascontiguousarray(pixels), encoding.to_rgb)
    return np.ascontiguousarray(pixels)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """JPEG/PNG sensor_msgs/CompressedImage -> uint8 [H,W,3] RGB."""
    check_compressed(msg)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)   # 8-bit BGR whatever the stored depth
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(CORRUPT_COMPRESSED, _undecodable(msg))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _undecodable(msg: CompressedImage) -> str:
    return f"cannot decode {len(msg.data)} bytes of compressed image (format {msg.format or 'unset'!r})"


def numpy_to_image(pixels: np.ndarray, encoding: str, header=None) -> Image:
    """[H,W] or [H,W,C] array -> sensor_msgs/Image with a tight step, in native byte order."""
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    shape = pixels.shape if pixels.ndim == 3 else (*pixels.shape, 1)
    if pixels.ndim not in (2, 3) or shape[2] != layout.channels or pixels.dtype != layout.dtype:
        raise ValueError(f"{encoding} needs a {layout.dtype} array of {layout.channels} channel(s), "
                         f"got {pixels.dtype} of shape {pixels.shape}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = shape[0], shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0 if np.little_endian else 1
    msg.step = shape[1] * layout.bytes_per_pixel
    # array.array from the buffer is one copy; assigning bytes would check every element in Python
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    msg.data = data
    return msg


def rgb_to_compressed(rgb: np.ndarray, image_format: str = "jpeg", header=None, quality: int = 90) -> CompressedImage:
    """uint8 [H,W,3] RGB -> sensor_msgs/CompressedImage in "jpeg" or "png"."""
    extensions = {"jpeg": ".jpg", "png": ".png"}
    if image_format not in extensions:
        raise ValueError(f"unsupported compressed format {image_format!r}; use 'jpeg' or 'png'")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if image_format == "jpeg" else []
    ok, buffer = cv2.imencode(extensions[image_format], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = image_format
    data = array.array("B")
    data.frombytes(buffer)
    msg.data = data
    return msg
