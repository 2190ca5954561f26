"""Which camera_info goes with an image: the one with its stamp, else the latest; none when none arrived."""
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from sparseinst_ros.camera_info import CameraInfoPairing, camera_info_topic

pytestmark = pytest.mark.ros


def camera_info(sec, width):
    info = CameraInfo(width=width, height=480, k=[float(width)] + [0.0] * 8)
    info.header.stamp = Time(sec=sec)
    info.header.frame_id = "driver_frame"
    return info


def test_camera_info_of_the_same_stamp_is_preferred_else_the_latest():
    pairing = CameraInfoPairing()
    for sec, width in ((1, 640), (2, 800), (3, 1024)):
        pairing.add(camera_info(sec, width))
    matched = pairing.match(Header(stamp=Time(sec=2), frame_id="cam"))
    assert (matched.width, matched.k[0]) == (800, 800.0)
    assert matched.header == Header(stamp=Time(sec=2), frame_id="cam")       # carries the image's header
    latest = pairing.match(Header(stamp=Time(sec=99), frame_id="cam"))
    assert latest.width == 1024 and latest.header.stamp.sec == 99
    again = pairing.match(Header(stamp=Time(sec=3), frame_id="cam"))           # the stored messages are unchanged
    assert again.width == 1024 and again.header.stamp.sec == 3


def test_only_the_last_few_are_kept():
    pairing = CameraInfoPairing(keep=2)
    for sec, width in ((1, 640), (2, 800), (3, 1024)):
        pairing.add(camera_info(sec, width))
    assert pairing.match(Header(stamp=Time(sec=1))).width == 1024              # stamp 1 is gone: the latest


def test_no_camera_info_is_republished_when_none_arrived():
    pairing = CameraInfoPairing()
    assert not pairing.received
    assert pairing.match(Header()) is None
    pairing.add(camera_info(1, 640))
    assert pairing.received


@pytest.mark.parametrize("image_topic, expected", [
    ("/cam/image_raw", "/cam/camera_info"), ("/image", "/camera_info"), ("/a/b/rect", "/a/b/camera_info")])
def test_camera_info_lives_beside_the_image_topic(image_topic, expected):
    assert camera_info_topic(image_topic) == expected
