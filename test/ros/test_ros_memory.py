"""One message must not leave the node holding memory: a compression bomb and a large raw frame, sent across
processes, are refused, and the node's resident memory returns to its steady state (within 100 MB).

The raw frame goes over a reliable subscription: a best-effort one (sensor_data) receives a frame this large
in UDP fragments, and Fast DDS keeps the buffers of fragments it never completes; the node never sees those
(docs/ros.md, "Memory").
"""
import itertools
import struct
import time
import zlib

import numpy as np
import psutil
import pytest
from ros_harness import MIN_SIZE, Client, scene_image, stamp, start_process
from sensor_msgs.msg import CompressedImage

from sparseinst_ros.conversions import numpy_to_image, rgb_to_compressed
from sparseinst_ros.image_header import PNG_SIGNATURE
from sparseinst_ros.parameters import INPUT_QOS

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]

MARGIN_BYTES = 100 * 2**20
_seconds = itertools.count(7000)


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of one colour, `width` x `height` RGB, compressed to about 1/1000 of its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * width)                           # filter byte + pixels
    rows_per_block = max(1, 2**24 // len(row))
    blocks = [compressor.compress(row * min(rows_per_block, height - start))
              for start in range(0, height, rows_per_block)]
    idat = b"".join(blocks) + compressor.flush()
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def stamped(msg):
    msg.header.stamp = stamp(next(_seconds))
    msg.header.frame_id = "camera_optical"
    return msg


def rss(process) -> int:
    return psutil.Process(process.process.pid).memory_info().rss


def steady_rss(client, process, good, frames: int = 10) -> int:
    """The node's resident memory after it has processed `frames` good frames (the largest of the last three)."""
    samples = []
    for _ in range(frames):
        client.send(stamped(good()))
        samples.append(rss(process))
    return max(samples[-3:])


def bad_input_count(client, cause: str) -> int:
    return int(client.latest_diagnostics().get(f"bad input: {cause}", 0))


def deliver_bad(client, msg, cause: str, timeout: float = 120.0) -> None:
    """Publish `msg` until the node has counted it as `cause`."""
    before = bad_input_count(client, cause)
    publisher = client.compressed_pub if isinstance(msg, CompressedImage) else client.image_pub
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(msg)
        if client.spin_until(lambda: bad_input_count(client, cause) > before, 10.0):
            return
    raise AssertionError(f"the node never counted the message as {cause}")


@pytest.fixture
def node_process(ros, weights_file, tmp_path):
    processes = []

    def start(**params):
        process = start_process("sparseinst_ros.node", tmp_path / f"node{len(processes)}.log",
                                params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                            max_size=2 * MIN_SIZE, diagnostics_period=0.5, **params),
                                remaps={"image": "/camera/image_raw"})
        processes.append(process)
        return process
    yield start
    for process in processes:
        assert process.stop() == 0, process.log()


def test_a_compression_bomb_is_refused_from_its_header(node_process):
    process = node_process(compressed_input=True)
    client = Client("memory_bomb_client")
    try:
        assert client.spin_until(lambda: client.compressed_pub.get_subscription_count() > 0, 120), process.log()
        def good():
            return rgb_to_compressed(scene_image(), "png")
        steady = steady_rss(client, process, good)
        bomb = stamped(CompressedImage(format="png", data=png_bomb(15000, 15000)))
        assert len(bomb.data) < 2**20                           # 675 MB of pixels
        deliver_bad(client, bomb, "too_large")
        after = steady_rss(client, process, good, frames=3)
        assert after <= steady + MARGIN_BYTES, f"{steady / 2**20:.0f} MiB before the bomb, {after / 2**20:.0f} after"
        assert "skipped a frame [too_large]: image 15000x15000 has 225000000 pixels" in process.log()
    finally:
        client.destroy()


def test_a_large_raw_frame_is_refused_and_its_memory_returned(node_process):
    process = node_process(input_qos="reliable")
    client = Client("memory_raw_client", image_qos=INPUT_QOS["reliable"])
    try:
        assert client.wait_for_subscriber(timeout=120), process.log()
        def good():
            return numpy_to_image(scene_image(), "rgb8")
        steady = steady_rss(client, process, good)
        large = stamped(numpy_to_image(np.zeros((10000, 10000, 3), np.uint8), "rgb8"))    # 300 MB
        deliver_bad(client, large, "too_large")
        del large
        after = steady_rss(client, process, good, frames=3)
        assert after <= steady + MARGIN_BYTES, f"{steady / 2**20:.0f} MiB before, {after / 2**20:.0f} after"
    finally:
        client.destroy()
