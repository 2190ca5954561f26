"""Depth and tracking across processes: image_source's generated RGB-D sequence -> the node (depth on, the demo
model) -> this process. The 3D outputs carry the colour stamps, their ids are those of the 2D detections and
the label image, the points lie inside their instance's mask, and ~/label_info is latched."""
import time

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import start_process
from sensor_msgs.msg import Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from sparseinst_core.data.rgbd_sequences import RgbdSequence, RgbdSequenceConfig
from sparseinst_core.data.synthetic import SYNTHETIC_CLASSES
from sparseinst_ros.conversions import image_to_numpy

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]
SIZE = dict(height=240, width=320, scene_count=10, seed=3)
WANTED = 4                                  # frames with every output


def collector(by_stamp: dict):
    def collect(msg):
        by_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
    return collect


@pytest.fixture(scope="module")
def received(ros, tmp_path_factory):
    import rclpy
    logs = tmp_path_factory.mktemp("rgbd")
    node = start_process("sparseinst_ros.node", logs / "node.log", params=dict(
        device="cpu", min_size=240, max_size=320, depth=True), remaps={
        "image": "/rgbd/image", "depth/image": "/rgbd/depth/image", "depth/camera_info": "/rgbd/depth/camera_info"})
    source = start_process("sparseinst_ros.tools.image_source", logs / "source.log", params=dict(
        source="generated_rgbd", rate=5.0, frame_id="rgbd_optical", **SIZE),
        remaps={"image": "/rgbd/image", "camera_info": "/rgbd/camera_info", "depth/image": "/rgbd/depth/image",
                "depth/camera_info": "/rgbd/depth/camera_info"})
    listener = rclpy.create_node("rgbd_listener")
    outputs = {name: {} for name in ("detections", "instance_mask", "detections_3d", "points")}
    for name, message_type in (("detections", Detection2DArray), ("instance_mask", Image),
                               ("detections_3d", Detection3DArray), ("points", PointCloud2)):
        listener.create_subscription(message_type, f"/sparseinst_node/{name}", collector(outputs[name]), 10)

    def complete():
        return set.intersection(*(set(by_stamp) for by_stamp in outputs.values()))
    deadline = time.monotonic() + 400
    try:
        while len(complete()) < WANTED and time.monotonic() < deadline and node.alive() and source.alive():
            rclpy.spin_once(listener, timeout_sec=0.05)
        label_info = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        listener.create_subscription(LabelInfo, "/sparseinst_node/label_info", label_info.append, latched)
        deadline = time.monotonic() + 30
        while not label_info and time.monotonic() < deadline:       # a late subscriber: the latched message
            rclpy.spin_once(listener, timeout_sec=0.05)
    finally:
        listener.destroy_node()
        source.stop()
        node_status = node.stop()
    assert len(complete()) >= WANTED, f"{ {k: len(v) for k, v in outputs.items()} }\n{node.log()[-3000:]}"
    assert node_status == 0, node.log()
    yield outputs, sorted(complete()), label_info


def test_3d_outputs_carry_the_colour_stamp_and_the_ids_of_the_2d_detections_and_the_label_image(received):
    outputs, stamps, _ = received
    for stamp in stamps:
        ids_2d = [int(d.id) for d in outputs["detections"][stamp].detections]
        labels = image_to_numpy(outputs["instance_mask"][stamp])
        assert sorted(set(np.unique(labels).tolist()) - {0}) == sorted(ids_2d)
        detections_3d = outputs["detections_3d"][stamp]
        assert detections_3d.header.frame_id == "rgbd_optical"
        assert {int(d.id) for d in detections_3d.detections} <= set(ids_2d) and detections_3d.detections
        for detection in detections_3d.detections:
            position = detection.results[0].pose.pose.position
            assert 0.4 < position.z < 4.6 and detection.results[0].hypothesis.class_id in SYNTHETIC_CLASSES


def test_points_lie_inside_their_instance_mask(received):
    outputs, stamps, _ = received
    colour_k = RgbdSequence(RgbdSequenceConfig(num_frames=1, colour_size=(SIZE["width"], SIZE["height"]))).colour_k
    for stamp in stamps:
        cloud = outputs["points"][stamp]
        raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
        xyz, ids = raw[:, :12].copy().view("<f4"), raw[:, 12:14].copy().view("<u2")[:, 0]   # (P, 3), (P,)
        pixels = np.rint(xyz @ colour_k.T[:, :2] / xyz[:, 2:3]).astype(int)                  # (P, 2) u, v
        labels = image_to_numpy(outputs["instance_mask"][stamp])
        inside = labels[pixels[:, 1].clip(0, labels.shape[0] - 1), pixels[:, 0].clip(0, labels.shape[1] - 1)] == ids
        assert len(ids) and inside.mean() > 0.99


def test_label_info_is_latched_with_the_class_map_and_threshold(received):
    _, _, label_info = received
    assert label_info, "no ~/label_info for a late subscriber"
    assert [(c.class_id, c.class_name) for c in label_info[0].class_map] == list(enumerate(SYNTHETIC_CLASSES))
    assert label_info[0].threshold == pytest.approx(0.3)
