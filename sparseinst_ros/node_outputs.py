"""The node's publishers: each camera's outputs (`cameras.Camera`: detections, instance_mask, camera_info;
overlay with `publish_overlay`; detections_3d, points and markers with `depth`), /diagnostics, and the class map
it publishes latched. `~/label_info` (vision_msgs/LabelInfo) is transient local, as the vision_msgs
README asks: published when the outputs open and again when the class filter or the score threshold changes,
so a late subscriber still gets it. It is a plain publisher even on the lifecycle node (lifecycle publishers
drop messages while inactive, and the class map is known from configuration on).
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from .cameras import Camera
from .outputs_3d import label_info_message

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class NodeOutputs:
    """The publishers of one node; `create_publisher`/`destroy_publisher` are its (lifecycle) publisher factory
    and its inverse. Empty (false) while closed."""

    def __init__(self, node, create_publisher, destroy_publisher):
        self.node = node
        self._create, self._destroy = create_publisher, destroy_publisher
        self.publishers: dict[str, object] = {}
        self.cameras: list[Camera] = []
        self.label_info = None

    def __len__(self) -> int:
        return len(self.publishers)

    def open(self, cameras: list[Camera], overlay: bool, depth: bool) -> None:
        self.cameras = cameras
        for camera in cameras:
            camera.open_outputs(self._create, OUTPUT_QOS, overlay, depth)
        self.publishers["diagnostics"] = self._create(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.label_info = self.node.create_publisher(LabelInfo, "~/label_info", LATCHED_QOS)

    def close(self) -> None:
        for camera in self.cameras:
            camera.close_outputs(self._destroy)
        for publisher in self.publishers.values():
            self._destroy(publisher)
        self.publishers = {}
        if self.label_info is not None:
            self.node.destroy_publisher(self.label_info)
            self.label_info = None

    def publish(self, messages: dict[str, object]) -> None:
        for name, message in messages.items():
            self.publishers[name].publish(message)

    def publish_label_info(self, class_names, allowed_classes: frozenset[int] | None, threshold: float) -> None:
        if self.label_info is not None:
            header = Header(stamp=self.node.get_clock().now().to_msg())
            self.label_info.publish(label_info_message(header, class_names, allowed_classes, threshold))
