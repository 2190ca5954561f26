"""Start-up warnings for deployments that lose camera images: a Fast DDS configuration that loses large images,
and a topic that has publishers but delivers nothing."""
import itertools

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import MIN_SIZE, Client, stamp, start_process
from sensor_msgs.msg import Image

from sparseinst_ros.conversions import numpy_to_image
from sparseinst_ros.transport import lossy_fastdds_configuration

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

_seconds = itertools.count(7000)


@pytest.fixture(scope="module")
def node(ros, weights_file, tmp_path_factory):
    # the node runs with Fast DDS' default transports and a reliable subscription
    process = start_process("sparseinst_ros.node", tmp_path_factory.mktemp("transport") / "node.log",
                          params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                      max_size=2 * MIN_SIZE, input_qos="reliable", input_timeout=1.0,
                                      diagnostics_period=0.5),
                          remaps={"image": "/camera/image_raw"}, env={"FASTDDS_DEFAULT_PROFILES_FILE": None})
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def client(node):
    client = Client("transport_test_client")     # its image publisher is best effort (sensor data QoS)
    assert node.wait_for_log("listening on /camera/image_raw", timeout=120), node.log()
    yield client
    client.destroy()


def test_silent_topic_with_publishers_names_the_likely_causes(client, node):
    # a best-effort publisher cannot feed a reliable subscription: nothing arrives
    frame = numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8")
    for _ in range(10):
        frame.header.stamp = stamp(next(_seconds))
        client.image_pub.publish(frame)
        client.spin_for(0.3)
    assert node.wait_for_log("no image received on /camera/image_raw", timeout=10), node.log()
    log = node.log()
    assert "publisher is best effort while input_qos is 'reliable'" in log
    assert "Fast DDS runs with its default transports" in log and "fastdds_large_data.xml" in log
    assert client.latest_diagnostics()["level"] == DiagnosticStatus.WARN


def test_large_images_with_default_transports_are_warned_about(client, node):
    reliable = client.node.create_publisher(Image, "/camera/image_raw",
                                            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    frame = numpy_to_image(np.zeros((720, 1280, 3), np.uint8), "rgb8")
    frame.header.stamp = stamp(next(_seconds))
    assert client.spin_until(lambda: reliable.get_subscription_count() > 0, 30)
    for _ in range(5):
        reliable.publish(frame)
        client.spin_for(0.5)
    assert node.wait_for_log("receiving 2.8 MB images on /camera/image_raw, but Fast DDS runs with its default "
                             "transports", timeout=30), node.log()
    assert node.log().count("receiving 2.8 MB images") == 1               # warned once
    client.node.destroy_publisher(reliable)


@pytest.mark.parametrize("environ,lossy", [
    ({}, True),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/opt/profile.xml"}, False),
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/opt/profile.xml"}, False),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, False),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, True),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, True),
])
def test_lossy_configurations_are_recognised(environ, lossy):
    assert (lossy_fastdds_configuration(environ) is not None) == lossy
