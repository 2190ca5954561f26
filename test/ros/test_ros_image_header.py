"""The size of a JPEG or PNG image from its header: every JPEG/PNG variant OpenCV writes, hand-made segments,
and truncated or random bytes (which may only raise ImageHeaderError)."""
import struct

import cv2
import numpy as np
import pytest

from sparseinst_ros.image_header import ImageHeaderError, compressed_image_size

RNG = np.random.default_rng(0)


def encoded(height, width, extension=".jpg", params=(), channels=3, dtype=np.uint8) -> bytes:
    shape = (height, width, channels) if channels > 1 else (height, width)
    pixels = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    ok, buffer = cv2.imencode(extension, pixels, list(params))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize("extension,params,channels,dtype", [
    (".jpg", (), 3, np.uint8),
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 3, np.uint8),
    (".jpg", (cv2.IMWRITE_JPEG_QUALITY, 10), 1, np.uint8),
    (".png", (), 3, np.uint8),
    (".png", (), 1, np.uint16),
    (".png", (), 4, np.uint8),
], ids=["jpeg", "progressive_jpeg", "grey_jpeg", "png", "png_16_bit_grey", "png_rgba"])
def test_the_header_gives_the_size_that_decoding_gives(extension, params, channels, dtype):
    for height, width in [(1, 1), (37, 5), (480, 640), (17, 1999)]:
        data = encoded(height, width, extension, params, channels, dtype)
        assert compressed_image_size(data) == (height, width)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (height, width)


def test_jpeg_segments_before_the_frame_header_are_skipped():
    data = encoded(48, 64)
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"Exif\x00" + bytes(4995)     # an APP1 segment of 5 KB
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 3) + b"abc"
    fill = b"\xff\xff\xff"                                                         # fill bytes before a marker
    assert compressed_image_size(data[:2] + exif + comment + fill + data[2:]) == (48, 64)


def test_a_sof_claiming_a_huge_image_is_read_as_such():
    data = bytearray(encoded(8, 8))
    sof = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    assert compressed_image_size(data) == (65000, 65000)


def test_any_buffer_type_is_read():
    data = encoded(9, 11, ".png")
    for buffer in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert compressed_image_size(buffer) == (9, 11)


@pytest.mark.parametrize("data,message", [
    (b"", "not a JPEG or PNG image"),
    (b"GIF89a\x01\x00\x01\x00", "not a JPEG or PNG image (it begins with b'GIF89a"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT", "PNG image without its IHDR header"),
    (b"\xff\xd8\xff\xe0\x00\x01", "segment of length 1"),
    (b"\xff\xd8\x00\x00\x00\x00", "broken marker at byte 2"),
    (b"\xff\xd8\xff\xda\x00\x08", "without a frame header"),
])
def test_bytes_without_a_readable_size_are_refused_with_the_reason(data, message):
    with pytest.raises(ImageHeaderError, match=message.replace("(", r"\(")):
        compressed_image_size(data)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_every_truncation_of_a_header_is_refused_or_read_correctly(extension):
    data = encoded(30, 40, extension)
    for end in range(len(data[:700])):
        try:
            assert compressed_image_size(data[:end]) == (30, 40)
        except ImageHeaderError:
            pass


def test_random_and_mutated_bytes_only_ever_raise_image_header_errors():
    rng = np.random.default_rng(1)
    starts = [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", encoded(12, 16)[:300], encoded(12, 16, ".png")[:40]]
    for trial in range(5000):
        start = bytearray(starts[trial % len(starts)])
        for index in rng.integers(0, max(len(start), 1), size=rng.integers(0, 4)):
            if start:
                start[index] = rng.integers(0, 256)
        data = bytes(start) + rng.integers(0, 256, size=rng.integers(0, 64), dtype=np.uint8).tobytes()
        try:
            height, width = compressed_image_size(data)
        except ImageHeaderError:
            continue
        assert 0 <= height < 2**32 and 0 <= width < 2**32
