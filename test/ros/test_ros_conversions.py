"""sensor_msgs images <-> numpy: every supported encoding, padding, byte order, and malformed messages."""
import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from sparseinst_ros.conversions import (
    BAD_SIZE, BAD_STEP, CORRUPT_COMPRESSED, DEGENERATE_SIZE, MAX_ASPECT_RATIO, MAX_INPUT_PIXELS, ODD_WIDTH, TOO_LARGE,
    UNKNOWN_ENCODING, ZERO_SIZE, ImageConversionError, check_frame_size, check_message, compressed_to_rgb,
    image_to_numpy, image_to_rgb, numpy_to_image, rgb_to_compressed)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def raw_message(pixels: np.ndarray, encoding: str, step: int | None = None, big_endian: bool = False,
                padding: bytes = b"") -> Image:
    """An Image built by hand (not with numpy_to_image), optionally with padded rows."""
    height, width = pixels.shape[:2]
    ordered = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    rows = [ordered[r].tobytes() + padding for r in range(height)]
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian))
    msg.step = step if step is not None else len(rows[0])
    msg.data = array.array("B", b"".join(rows))
    return msg


def scale16(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit rule: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


RGB16 = RNG.integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
GREY16 = RNG.integers(0, 65536, size=(5, 7), dtype=np.uint16)
ALPHA = RNG.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)

CASES = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[:, :, ::-1], RGB),
    "rgba8": (np.concatenate([RGB, ALPHA], axis=2), RGB),
    "bgra8": (np.concatenate([RGB[:, :, ::-1], ALPHA], axis=2), RGB),
    "mono8": (RGB[:, :, 0], np.repeat(RGB[:, :, :1], 3, axis=2)),
    "rgb16": (RGB16, scale16(RGB16)),
    "bgr16": (RGB16[:, :, ::-1], scale16(RGB16)),
    "rgba16": (np.concatenate([RGB16, ALPHA.astype(np.uint16) * 257], axis=2), scale16(RGB16)),
    "bgra16": (np.concatenate([RGB16[:, :, ::-1], ALPHA.astype(np.uint16) * 257], axis=2), scale16(RGB16)),
    "mono16": (GREY16, np.repeat(scale16(GREY16)[:, :, None], 3, axis=2)),
}


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_every_encoding_converts_to_rgb(encoding):
    pixels, expected = CASES[encoding]
    rgb = image_to_rgb(raw_message(pixels, encoding))
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("encoding", ["rgb16", "mono16"])
def test_big_endian_16_bit_images_are_byte_swapped(encoding):
    pixels, expected = CASES[encoding]
    np.testing.assert_array_equal(image_to_rgb(raw_message(pixels, encoding, big_endian=True)), expected)
    np.testing.assert_array_equal(image_to_numpy(raw_message(pixels, encoding, big_endian=True)), pixels)


def test_16_bit_scaling_rounds_to_nearest():
    grey = np.array([[0, 128, 129, 257, 65535]], dtype=np.uint16)
    rgb = image_to_rgb(raw_message(grey, "mono16"))
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 1, 255]


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_packed_yuv_uses_the_encoding_byte_order(encoding):
    # a horizontal luma ramp with neutral chroma must come out as the same grey ramp
    luma = np.array([[16, 60, 120, 180, 235, 235]], dtype=np.uint8).repeat(2, axis=0)
    chroma = np.full_like(luma, 128)
    pairs = [chroma, luma] if encoding == "yuv422" else [luma, chroma]   # UYVY vs YUYV
    packed = np.stack(pairs, axis=2)                                     # [H,W,2]
    rgb = image_to_rgb(raw_message(packed, encoding)).astype(int)
    assert np.all(np.abs(rgb[:, :, 0] - rgb[:, :, 2]) <= 1)             # grey
    assert np.all(np.diff(rgb[0, :5, 1]) > 30)                          # follows the ramp
    assert rgb[0, 0, 1] <= 5 and rgb[0, 4, 1] >= 250                    # video range 16..235 -> 0..255


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_packed_yuv_of_odd_width_is_refused_in_the_header_check(encoding):
    msg = raw_message(np.full((4, 5, 2), 128, np.uint8), encoding)
    error = conversion_error(msg)
    assert error.cause == ODD_WIDTH
    assert str(error) == (f"{encoding} is packed 4:2:2 (two pixels share their chroma), so its width must be even; "
                          "got 5x4")


def test_padded_rows_are_ignored():
    msg = raw_message(RGB[:, :, ::-1], "bgr8", padding=b"\xff" * 11)
    assert msg.step == 7 * 3 + 11
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_numpy_to_image_round_trips_with_a_tight_step():
    labels = RNG.integers(0, 65536, size=(4, 6), dtype=np.uint16)
    msg = numpy_to_image(labels, "mono16")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 6, 12, "mono16")
    np.testing.assert_array_equal(image_to_numpy(msg), labels)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(RGB, "rgb8")), RGB)


def test_numpy_to_image_rejects_a_mismatched_array():
    with pytest.raises(ValueError, match="mono16 needs a uint16 array"):
        numpy_to_image(RGB, "mono16")
    with pytest.raises(ValueError, match="unsupported image encoding '32FC1'"):
        numpy_to_image(RGB, "32FC1")


def conversion_error(msg) -> ImageConversionError:
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(msg)
    return info.value


def test_unknown_encoding_is_named():
    error = conversion_error(raw_message(RGB[:, :, 0].astype(np.float32), "32FC1"))
    assert error.cause == UNKNOWN_ENCODING and "'32FC1'" in str(error) and "rgb8" in str(error)


def test_step_smaller_than_a_row_is_rejected():
    msg = raw_message(RGB, "rgb8")
    msg.step = 20   # 7 pixels x 3 bytes need 21
    error = conversion_error(msg)
    assert error.cause == BAD_STEP and "step 20" in str(error) and "21" in str(error)


def test_data_length_must_match_step_times_height():
    msg = raw_message(RGB, "rgb8")
    msg.data = msg.data[:-1]
    error = conversion_error(msg)
    assert error.cause == BAD_SIZE and str(len(msg.data)) in str(error) and "105" in str(error)


def test_declared_size_larger_than_the_data_is_rejected():
    msg = raw_message(RGB, "rgb8")
    msg.height = 6
    assert conversion_error(msg).cause == BAD_SIZE


@pytest.mark.parametrize("width,height", [(0, 5), (7, 0), (0, 0)])
def test_zero_size_is_rejected(width, height):
    msg = Image(width=width, height=height, encoding="rgb8", step=width * 3)
    error = conversion_error(msg)
    assert error.cause == ZERO_SIZE and f"{width}x{height}" in str(error)


def frame_size_error(height, width, max_pixels=MAX_INPUT_PIXELS):
    with pytest.raises(ImageConversionError) as info:
        check_frame_size(height, width, max_pixels)
    return info.value


def test_frames_up_to_the_pixel_limit_are_accepted_and_larger_ones_refused_naming_the_parameter():
    assert MAX_INPUT_PIXELS == 4096 * 4096
    check_frame_size(4096, 4096)
    error = frame_size_error(4096, 4097)
    assert error.cause == TOO_LARGE
    assert str(error) == "image 4097x4096 has 16781312 pixels, more than max_input_pixels = 16777216"
    check_frame_size(100, 200, max_pixels=20000)
    assert frame_size_error(100, 201, max_pixels=20000).cause == TOO_LARGE


@pytest.mark.parametrize("height,width", [(1, 8000), (8000, 1), (1, 17), (10, 161), (161, 10)])
def test_frames_more_elongated_than_the_aspect_ratio_limit_are_degenerate(height, width):
    error = frame_size_error(height, width)
    assert error.cause == DEGENERATE_SIZE and f"{width}x{height}" in str(error)
    assert f"at most {MAX_ASPECT_RATIO} times its shorter (aspect-ratio limit 16:1)" in str(error)


@pytest.mark.parametrize("height,width", [(1, 16), (16, 1), (10, 160), (480, 7680), (1, 1)])
def test_frames_up_to_the_aspect_ratio_limit_are_accepted(height, width):
    check_frame_size(height, width)


def test_a_compressed_frame_is_checked_by_its_header_size_without_decoding():
    msg = rgb_to_compressed(np.zeros((40, 30, 3), np.uint8), "png")
    check_message(msg, max_pixels=1200)
    with pytest.raises(ImageConversionError) as info:
        check_message(msg, max_pixels=1199)
    assert info.value.cause == TOO_LARGE and "image 30x40 has 1200 pixels" in str(info.value)


def test_png_round_trip_is_exact_and_jpeg_is_close():
    image = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(compressed_to_rgb(rgb_to_compressed(image, "png")), image)
    decoded = compressed_to_rgb(rgb_to_compressed(image, "jpeg", quality=95))
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 6


def test_corrupt_jpeg_is_rejected():
    msg = rgb_to_compressed(np.full((32, 32, 3), 90, np.uint8), "jpeg")
    msg.data = msg.data[:20]                       # header only: truncated stream
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(msg)
    assert info.value.cause == CORRUPT_COMPRESSED and "jpeg" in str(info.value)
    garbage = CompressedImage(format="jpeg")
    garbage.data = array.array("B", bytes(range(256)) * 4)
    with pytest.raises(ImageConversionError, match="cannot decode 1024 bytes"):
        compressed_to_rgb(garbage)


def test_compressed_data_that_is_not_jpeg_or_png_is_refused_before_decoding():
    msg = CompressedImage(format="png")
    msg.data = array.array("B", b"GIF89a" + bytes(100))
    with pytest.raises(ImageConversionError) as info:
        check_message(msg)
    assert info.value.cause == CORRUPT_COMPRESSED
    assert str(info.value) == ("cannot decode 106 bytes of compressed image (format 'png'): not a JPEG or PNG image "
                               "(it begins with b'GIF89a\\x00\\x00')")


def test_empty_compressed_image_is_zero_size():
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(CompressedImage(format="png"))
    assert info.value.cause == ZERO_SIZE
