"""The node with depth and tracking, in process, on a generated RGB-D sequence through the shipped demo model.

Frames go through the node's own callbacks and inference thread (`on_image`, the depth stream's callbacks,
the frame loop) one at a time; what the node publishes is recorded. One node serves the whole module.
"""
import itertools
import time

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_harness import RecordingLogger
from sensor_msgs.msg import CameraInfo, Image

from sparseinst_core.data.rgbd_sequences import RgbdSequence, RgbdSequenceConfig
from sparseinst_ros.conversions import image_to_numpy, numpy_to_image
from sparseinst_ros.node import SparseInstPipeline

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]
FRAMES = 6
SEQUENCE = RgbdSequence(RgbdSequenceConfig(num_frames=FRAMES, frame_rate=15.0, num_objects=(3, 3),
                                           distinct_classes=True, colour_size=(320, 240), depth_size=(160, 120)),
                        seed=5)
_names = itertools.count()


def header_msg(msg, seconds: float, frame_id: str = "camera_color_optical_frame"):
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(seconds), round((seconds % 1) * 1e9)
    msg.header.frame_id = frame_id
    return msg


def depth_image(millimetres: np.ndarray) -> Image:
    return Image(height=millimetres.shape[0], width=millimetres.shape[1], encoding="16UC1",
                 step=2 * millimetres.shape[1], data=millimetres.astype("<u2").tobytes())


def intrinsics(k: np.ndarray, width: int, height: int) -> CameraInfo:
    return CameraInfo(width=width, height=height, k=k.ravel().tolist())


class NodeUnderTest:
    """A started pipeline (depth on) whose published messages are recorded by output name and stamp."""

    def __init__(self):
        self.node = Node(f"node_3d_test_{next(_names)}", parameter_overrides=[
            Parameter("device", value="cpu"), Parameter("min_size", value=240), Parameter("max_size", value=320),
            Parameter("depth", value=True)])
        self.pipeline = SparseInstPipeline(self.node, self.node.create_publisher, self.node.destroy_publisher)
        self.pipeline.hints.logger = self.logger = RecordingLogger()
        self.published: dict[str, dict] = {}
        self.pipeline.load_model()
        self.pipeline.open_outputs()
        self.pipeline.open_inputs()
        self.camera = self.pipeline.cameras[0]
        self.camera.publish = self._record

    def _record(self, messages):
        """One frame's outputs (by the stamp of its detections; a MarkerArray has no header), or diagnostics."""
        if "detections" in messages:
            stamp = messages["detections"].header.stamp
            for name, msg in messages.items():
                self.published.setdefault(name, {})[stamp.sec + 1e-9 * stamp.nanosec] = msg

    def send(self, seconds: float, colour: np.ndarray, depth: Image | None, depth_info: CameraInfo | None,
             colour_k: np.ndarray) -> dict:
        """Depth (if any), then the colour image and its camera_info, at `seconds`; waits for the outputs."""
        height, width = colour.shape[:2]
        if depth is not None:
            self.camera.depth.camera_infos.add(header_msg(depth_info, seconds))
            self.camera.depth.on_image(depth)
        self.camera.camera_info.add(header_msg(intrinsics(colour_k, width, height), seconds))
        self.pipeline.on_image(header_msg(numpy_to_image(colour, "rgb8"), seconds), None)
        key = round(seconds, 6)
        while not any(round(stamp, 6) == key for stamp in self.published.get("detections", {})):
            time.sleep(0.05)                       # no time limit here: the module's pytest timeout guards a stuck node
        return {name: msg for name, by_stamp in self.published.items() for stamp, msg in by_stamp.items()
                if round(stamp, 6) == key}

    def close(self):
        self.pipeline.close_inputs()
        self.pipeline.close_outputs()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def node_3d(ros):
    node = NodeUnderTest()
    depth_info = intrinsics(SEQUENCE.depth_k, 160, 120)
    frames = []
    for frame in SEQUENCE:
        depth = header_msg(depth_image(frame.depth), frame.stamp)
        frames.append((frame, node.send(frame.stamp, frame.colour, depth, depth_info, SEQUENCE.colour_k)))
    yield node, frames
    node.close()


def ground_truth_ids(frame, label_image: np.ndarray) -> dict[int, int]:
    """Ground-truth track id -> the detection id covering most of its visible pixels."""
    matches = {}
    for obj in frame.objects:
        x, y = obj.mask_offset
        values = label_image[y:y + obj.mask.shape[0], x:x + obj.mask.shape[1]][obj.mask]
        values = values[values > 0]
        if len(values) > 0.5 * obj.mask.sum():
            matches[obj.track_id] = int(np.bincount(values).argmax())
    return matches


def test_detection_ids_persist_across_frames_and_are_the_label_image_values(node_3d):
    _, frames = node_3d
    first = None
    for frame, outputs in frames:
        labels = image_to_numpy(outputs["instance_mask"])
        ids = [int(d.id) for d in outputs["detections"].detections]
        assert sorted(set(np.unique(labels).tolist()) - {0}) == sorted(ids)
        matches = ground_truth_ids(frame, labels)
        assert len(matches) == 3                                      # the demo model finds the three objects
        first = first or matches
        assert matches == first                                       # the same id for the same object


def test_3d_detections_carry_the_colour_stamp_the_depth_frame_and_centroids_near_the_ground_truth(node_3d):
    _, frames = node_3d
    errors = []
    for frame, outputs in frames:
        detections_3d = outputs["detections_3d"]
        assert detections_3d.header.frame_id == "camera_color_optical_frame"
        assert detections_3d.header.stamp == outputs["detections"].header.stamp
        by_id = {int(d.id): d for d in detections_3d.detections}
        assert set(by_id) <= {int(d.id) for d in outputs["detections"].detections}
        for track_id, detection_id in ground_truth_ids(frame, image_to_numpy(outputs["instance_mask"])).items():
            truth = next(obj for obj in frame.objects if obj.track_id == track_id)
            position = by_id[detection_id].results[0].pose.pose.position
            errors.append(np.linalg.norm([position.x, position.y, position.z] - truth.centroid))
    assert len(errors) == 3 * FRAMES and np.median(errors) < 0.03 and max(errors) < 0.10


def test_points_and_markers_belong_to_the_3d_detections(node_3d):
    _, frames = node_3d
    _, outputs = frames[-1]
    ids_3d = {int(d.id) for d in outputs["detections_3d"].detections}
    cloud = outputs["points"]
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.width, cloud.point_step)
    assert set(raw[:, 12:14].copy().view("<u2")[:, 0].tolist()) == ids_3d
    texts = [m.text for m in outputs["markers"].markers if m.text]
    assert sorted(int(text.split()[-1]) for text in texts) == sorted(ids_3d)


def test_depth_problems_are_said_once_per_cause_and_counted(node_3d):
    node, _ = node_3d
    frame = SEQUENCE[FRAMES - 1]
    info = intrinsics(SEQUENCE.depth_k, 160, 120)
    start = SEQUENCE[FRAMES - 1].stamp + 1.0
    node.pipeline.loop.snapshot()
    for index in range(2):
        other_frame = header_msg(depth_image(frame.depth), start + index, frame_id="camera_depth_optical_frame")
        outputs = node.send(start + index, frame.colour, other_frame, info, SEQUENCE.colour_k)
        assert "detections_3d" not in outputs and outputs["detections"].detections      # 2D goes on
    not_depth = header_msg(depth_image(frame.depth), start + 2)
    not_depth.encoding = "mono16"
    node.send(start + 2, frame.colour, not_depth, info, SEQUENCE.colour_k)
    for index in (3, 4):                                            # the latest depth is 1-2 s old
        node.send(start + index, frame.colour, None, None, SEQUENCE.colour_k)
    said = [w.split("]")[0] for w in node.logger.warnings if w.startswith("no 3D")]
    assert said == ["no 3D for a frame [depth_frame_id", "no 3D for a frame [depth_encoding",
                    "no 3D for a frame [no_depth_in_slop"]
    assert node.pipeline.loop.snapshot().depth_problems == {"depth_frame_id": 2, "depth_encoding": 1,
                                                           "no_depth_in_slop": 2}
