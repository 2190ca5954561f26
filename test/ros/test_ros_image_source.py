"""The image source node publishes a folder, a video file or generated scenes with its frame id and camera_info."""
import time

import cv2
import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from ros_harness import start_process
from sensor_msgs.msg import CameraInfo, Image

from sparseinst_ros.conversions import image_to_rgb

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture
def listener(ros):
    import rclpy
    node = rclpy.create_node("image_source_listener")
    received = {"image": [], "camera_info": []}
    node.create_subscription(Image, "/cam0/image_raw", received["image"].append, qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "/cam0/camera_info", received["camera_info"].append, qos_profile_sensor_data)
    yield node, received
    node.destroy_node()


def run_source(tmp_path, listener, source, wanted=10, **params):
    """Run the source at 20 Hz until `wanted` images arrived here (or 60 s passed); returns what arrived."""
    import rclpy
    node, received = listener
    process = start_process("sparseinst_ros.tools.image_source", tmp_path / "source.log",
                          params=dict(source=str(source), rate=20.0, frame_id="cam0_optical", **params),
                          remaps={"image": "/cam0/image_raw", "camera_info": "/cam0/camera_info"})
    deadline = time.monotonic() + 60
    while process.alive() and len(received["image"]) < wanted and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    assert process.stop() == 0, process.log()
    return received


def test_folder_images_are_published_in_name_order_with_the_frame_id(tmp_path, listener):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, colour in enumerate(COLOURS):
        cv2.imwrite(str(folder / f"{index:03d}.png"), np.full((40, 60, 3), colour[::-1], np.uint8))  # BGR file
    received = run_source(tmp_path, listener, folder)
    images = received["image"]
    assert len(images) >= 10
    for msg in images:
        assert msg.header.frame_id == "cam0_optical" and (msg.height, msg.width) == (40, 60)
    colours = [tuple(int(c) for c in image_to_rgb(m)[0, 0]) for m in images]
    assert all(colours[i + 1] == COLOURS[(COLOURS.index(colours[i]) + 1) % 3] for i in range(len(colours) - 1))
    infos = {(i.header.stamp.sec, i.header.stamp.nanosec): i for i in received["camera_info"]}
    matched = [infos[(m.header.stamp.sec, m.header.stamp.nanosec)] for m in images
               if (m.header.stamp.sec, m.header.stamp.nanosec) in infos]
    assert matched and all((i.width, i.height, i.header.frame_id) == (60, 40, "cam0_optical") for i in matched)


def test_video_file_is_published(tmp_path, listener):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for value in range(0, 250, 25):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    images = run_source(tmp_path, listener, path, wanted=15, loop=True)["image"]
    assert len(images) >= 10 and all((m.height, m.width, m.encoding) == (48, 64, "rgb8") for m in images)
    assert len({int(image_to_rgb(m)[0, 0, 0]) // 10 for m in images}) >= 5     # the clip's frames, looped


def test_generated_scenes_are_published_at_the_requested_size(tmp_path, listener):
    images = run_source(tmp_path, listener, "generated", height=72, width=96, scene_count=2,
                        encoding="bgr8")["image"]
    assert len(images) >= 10 and all((m.height, m.width, m.encoding) == (72, 96, "bgr8") for m in images)


def test_a_finite_source_stops_after_its_last_frame(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.jpg"), np.zeros((32, 32, 3), np.uint8))
    process = start_process("sparseinst_ros.tools.image_source", tmp_path / "source.log",
                          params=dict(source=str(folder), rate=50.0, loop=False))
    assert process.process.wait(timeout=60) == 0
    process.stop()
    assert "source finished after 3 frames" in process.log()


def test_unknown_source_fails_at_start_up(tmp_path):
    process = start_process("sparseinst_ros.tools.image_source", tmp_path / "source.log",
                          params=dict(source="/nonexistent/video.mp4"))
    assert process.process.wait(timeout=60) == 1
    process.stop()
    assert "neither 'generated', 'camera:N', a folder nor a video file" in process.log()
