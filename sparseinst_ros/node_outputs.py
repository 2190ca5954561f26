"""The node's publishers, by output name (topic `~/<name>`), and the class map it publishes latched.

Outputs: detections, instance_mask, camera_info, /diagnostics; overlay with `publish_overlay`; detections_3d,
points and markers with `depth`. `~/label_info` (vision_msgs/LabelInfo) is transient local, as the vision_msgs
README asks: published when the outputs open and again when the class filter or the score threshold changes,
so a late subscriber still gets it. It is a plain publisher even on the lifecycle node (lifecycle publishers
drop messages while inactive, and the class map is known from configuration on).
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from .outputs_3d import label_info_message

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUTS_3D = {"detections_3d": Detection3DArray, "points": PointCloud2, "markers": MarkerArray}


class NodeOutputs:
    """The publishers of one node; `create_publisher`/`destroy_publisher` are its (lifecycle) publisher factory
    and its inverse. Empty (false) while closed."""

    def __init__(self, node, create_publisher, destroy_publisher):
        self.node = node
        self._create, self._destroy = create_publisher, destroy_publisher
        self.publishers: dict[str, object] = {}
        self.label_info = None

    def __len__(self) -> int:
        return len(self.publishers)

    def open(self, overlay: bool, depth: bool) -> None:
        types = {"detections": Detection2DArray, "instance_mask": Image, "camera_info": CameraInfo}
        types |= ({"overlay": Image} if overlay else {}) | (OUTPUTS_3D if depth else {})
        self.publishers = {name: self._create(message_type, f"~/{name}", OUTPUT_QOS)
                           for name, message_type in types.items()}
        self.publishers["diagnostics"] = self._create(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.label_info = self.node.create_publisher(LabelInfo, "~/label_info", LATCHED_QOS)

    def close(self) -> None:
        for publisher in self.publishers.values():
            self._destroy(publisher)
        self.publishers = {}
        if self.label_info is not None:
            self.node.destroy_publisher(self.label_info)
            self.label_info = None

    def publish(self, messages: dict[str, object]) -> None:
        for name, message in messages.items():
            self.publishers[name].publish(message)

    def overlay_wanted(self) -> bool:
        """True while someone subscribes to ~/overlay (it is drawn only then)."""
        overlay = self.publishers.get("overlay")
        return overlay is not None and overlay.get_subscription_count() > 0

    def publish_label_info(self, class_names, allowed_classes: frozenset[int] | None, threshold: float) -> None:
        if self.label_info is not None:
            header = Header(stamp=self.node.get_clock().now().to_msg())
            self.label_info.publish(label_info_message(header, class_names, allowed_classes, threshold))
