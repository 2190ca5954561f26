"""Fuzzing the node across processes: random mutations of Image and CompressedImage messages (fields, sizes,
encodings, truncated or random data) from a seeded generator, for a bounded time, interleaved with good
frames. The node stays up, answers every good frame, and its resident memory stays bounded."""
import itertools
import os
import struct
import time

import numpy as np
import psutil
import pytest
from ros_harness import MIN_SIZE, Client, scene_image, stamp, start_process
from sensor_msgs.msg import CompressedImage, Image

from sparseinst_ros.conversions import ENCODINGS, numpy_to_image, rgb_to_compressed

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]

FUZZ_SECONDS = float(os.environ.get("SPARSEINST_FUZZ_SECONDS", 25))
SEED = int(os.environ.get("SPARSEINST_FUZZ_SEED", 14))
GOOD_EVERY_S = 1.5                      # a good frame, and its answer awaited, this often
MARGIN_BYTES = 100 * 2**20
MAX_DATA_BYTES = 4 * 2**20              # fuzzed messages stay within the Fast DDS shared-memory segment
_seconds = itertools.count(20000)


def stamped(msg):
    msg.header.stamp = stamp(next(_seconds))
    msg.header.frame_id = "camera_optical"
    return msg


def random_size(rng) -> tuple[int, int]:
    """Mostly small sizes, some degenerate or extreme ones."""
    choice = rng.integers(0, 6)
    if choice == 0:
        return int(rng.integers(0, 3)), int(rng.integers(0, 3000))
    if choice == 1:
        return int(rng.integers(0, 3000)), int(rng.integers(0, 3))
    if choice == 2:
        return int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32))
    return int(rng.integers(1, 700)), int(rng.integers(1, 700))


def random_bytes(rng, size: int) -> bytes:
    return rng.integers(0, 256, size=min(size, MAX_DATA_BYTES), dtype=np.uint8).tobytes()


def mutate(rng, data: bytes) -> bytes:
    """Truncate, extend, flip bytes (the first few hundred most often: the header), or replace."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        operation = rng.integers(0, 4)
        if operation == 0 and data:
            del data[int(rng.integers(0, len(data))):]
        elif operation == 1:
            data += random_bytes(rng, int(rng.integers(1, 5000)))
        elif operation == 2 and data:
            for index in rng.integers(0, min(len(data), 400 if rng.random() < 0.7 else len(data)), size=8):
                data[index] = int(rng.integers(0, 256))
        elif operation == 3:
            data = bytearray(random_bytes(rng, int(rng.integers(0, 20000))))
    return bytes(data[:MAX_DATA_BYTES])


def fuzzed_image(rng) -> Image:
    """An Image whose fields and data disagree in random ways (sometimes a valid odd one)."""
    height, width = random_size(rng)
    encodings = [*ENCODINGS, "32FC1", "bayer_rggb8", "", "rgb8\x00", "ü" * 3]
    msg = Image(height=height % 2**32, width=width % 2**32, encoding=str(rng.choice(encodings)),
                is_bigendian=int(rng.integers(0, 256)))
    layout = ENCODINGS.get(msg.encoding)
    row_bytes = width * (layout.bytes_per_pixel if layout else 3)
    msg.step = int(rng.choice([row_bytes, row_bytes + int(rng.integers(1, 64)), max(row_bytes - 1, 0),
                               int(rng.integers(0, 2**32))])) % 2**32
    if msg.step * height <= MAX_DATA_BYTES and rng.random() < 0.6:
        data = random_bytes(rng, msg.step * height)                 # the size the header claims...
        msg.data = mutate(rng, data) if rng.random() < 0.5 else data    # ...or not quite
    else:
        msg.data = random_bytes(rng, int(rng.integers(0, 100000)))
    return stamped(msg)


def fuzzed_compressed(rng) -> CompressedImage:
    """A JPEG or PNG of random size and content, mutated; or random bytes; or a header claiming a huge image."""
    image_format = str(rng.choice(["jpeg", "png"]))
    height, width = (int(v) for v in rng.integers(1, 600, size=2))
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    data = bytes(rgb_to_compressed(pixels, image_format).data)
    choice = rng.integers(0, 5)
    if choice == 0:
        data = random_bytes(rng, int(rng.integers(0, 50000)))
    elif choice == 1:                                                   # the header claims another size
        huge = struct.pack(">HH", *(int(v) for v in rng.integers(0, 2**16, size=2)))
        if image_format == "png":
            data = data[:16] + struct.pack(">II", *(int(v) for v in rng.integers(0, 2**32, size=2))) + data[24:]
        else:
            sof = next((i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)), None)
            data = data if sof is None else data[:sof + 5] + huge + data[sof + 9:]
    elif choice < 4:
        data = mutate(rng, data)
    msg = CompressedImage(format=str(rng.choice([image_format, "", "bgr8; jpeg compressed bgr8", "tiff"])))
    msg.data = data
    return stamped(msg)


def good_frame(compressed: bool):
    image = scene_image()
    return stamped(rgb_to_compressed(image, "jpeg") if compressed else numpy_to_image(image, "rgb8"))


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_the_node_survives_fuzzed_images_and_keeps_answering(ros, weights_file, tmp_path, compressed):
    process = start_process("sparseinst_ros.node", tmp_path / "node.log",
                            params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                        max_size=2 * MIN_SIZE, compressed_input=compressed, diagnostics_period=0.5),
                            remaps={"image": "/camera/image_raw"})
    client = Client(f"fuzz_client_{int(compressed)}")
    publisher = client.compressed_pub if compressed else client.image_pub
    rng = np.random.default_rng(SEED + int(compressed))
    try:
        assert client.spin_until(lambda: publisher.get_subscription_count() > 0, 120), process.log()
        for _ in range(5):                                              # warm-up: model, allocator, buffers
            client.send(good_frame(compressed))
        client.spin_for(1.5)
        start_rss = psutil.Process(process.process.pid).memory_info().rss
        fuzzed = answered = 0
        deadline = time.monotonic() + FUZZ_SECONDS
        while time.monotonic() < deadline:
            next_good = time.monotonic() + GOOD_EVERY_S
            while time.monotonic() < next_good:
                publisher.publish(fuzzed_compressed(rng) if compressed else fuzzed_image(rng))
                fuzzed += 1
                client.spin_for(0.01)
            client.send(good_frame(compressed), timeout=60)             # raises unless answered
            answered += 1
            assert process.alive(), process.log()
        for _ in range(3):
            client.send(good_frame(compressed))
        client.spin_for(1.5)                            # the heap is trimmed at the next diagnostics period
        end_rss = psutil.Process(process.process.pid).memory_info().rss
        report = client.latest_diagnostics()
        assert int(report["bad input frames"]) > fuzzed / 3 and answered >= FUZZ_SECONDS / GOOD_EVERY_S / 2, (
            f"seed {SEED}: {fuzzed} fuzzed messages, {report['bad input frames']} counted as bad, {answered} answered")
        assert end_rss <= start_rss + MARGIN_BYTES, (
            f"seed {SEED}: {start_rss / 2**20:.0f} MiB before {fuzzed} fuzzed messages, {end_rss / 2**20:.0f} after")
        assert "Traceback" not in process.log()
    finally:
        client.destroy()
        assert process.stop() == 0, process.log()
