"""The node on a compressed image stream (compressed_input): JPEG and PNG in, corrupt data counted."""
import itertools

import numpy as np
import pytest
from ros_harness import MIN_SIZE, Client, scene_image, stamp, start_process
from sensor_msgs.msg import CompressedImage

from sparseinst_ros.conversions import rgb_to_compressed

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

IMAGE = scene_image()
_seconds = itertools.count(3000)


def compressed(image_format="jpeg"):
    msg = rgb_to_compressed(IMAGE, image_format)
    msg.header.stamp = stamp(next(_seconds))
    msg.header.frame_id = "camera_optical"
    return msg


@pytest.fixture(scope="module")
def node(ros, weights_file, tmp_path_factory):
    process = start_process("sparseinst_ros.node", tmp_path_factory.mktemp("compressed") / "node.log",
                          params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                      max_size=2 * MIN_SIZE, compressed_input=True, diagnostics_period=0.5),
                          remaps={"image": "/camera/image_raw"})
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def client(node):
    client = Client("compressed_test_client")
    assert client.spin_until(lambda: client.compressed_pub.get_subscription_count() > 0, 120), node.log()
    yield client
    client.destroy()


def test_subscribes_to_the_compressed_topic_beside_the_remapped_image(client):
    assert client.image_pub.get_subscription_count() == 0
    assert client.latest_diagnostics()["image topic"] == "/camera/image_raw/compressed"


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_compressed_frames_are_segmented(client, image_format):
    msg = compressed(image_format)
    out = client.send(msg)
    assert out["detections"].header == msg.header and out["detections"].detections
    assert (out["instance_mask"].height, out["instance_mask"].width) == IMAGE.shape[:2]


def corrupt_jpeg():
    msg = compressed("jpeg")
    msg.data = msg.data[: len(msg.data) // 8]
    return msg


def garbage():
    msg = CompressedImage(format="jpeg")
    msg.header.stamp = stamp(next(_seconds))
    msg.data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return msg


def empty():
    msg = CompressedImage(format="png")
    msg.header.stamp = stamp(next(_seconds))
    return msg


@pytest.mark.parametrize("make,cause", [(corrupt_jpeg, "corrupt_compressed"), (garbage, "corrupt_compressed"),
                                        (empty, "zero_size")])
def test_corrupt_compressed_data_is_counted_and_the_node_keeps_running(client, node, make, cause):
    before = int(client.latest_diagnostics().get(f"bad input: {cause}", 0))
    assert client.receives_nothing_for(make(), seconds=2.0)
    client.send(compressed())
    assert int(client.latest_diagnostics()[f"bad input: {cause}"]) > before
    assert node.alive()
