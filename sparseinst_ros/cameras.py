"""The cameras of one node: which image topics it reads, where each camera's outputs go, and what the node
keeps about each camera (its camera_info, its image size, its counts).

With the parameter `image_topics` empty the node has one camera, the relative topic `image` (remappable), and
publishes `~/detections`, `~/instance_mask`, `~/camera_info` and `~/overlay`. Otherwise it has one camera
per topic, and each camera's outputs live under the node's private namespace at the namespace of its image
topic (the topic without its last name): `/front/image_raw` -> `~/front/detections`, `~/front/instance_mask`,
`~/front/camera_info`, `~/front/overlay`; `/rig/left/image_rect` -> `~/rig/left/...`. Its camera_info input
is the image topic's sibling, `/front/camera_info`, and with `depth` its depth input is `/front/depth/image` and
`/front/depth/camera_info` (for the one camera `image`: the relative `depth/image`, `depth/camera_info`). Two topics of the same namespace would publish to the
same outputs, so such a list is refused.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray
from vision_msgs.msg import Detection2DArray, Detection3DArray

from .camera_info import CameraInfoPairing, camera_info_topic
from .depth_stream import DepthStream
from .health import SizeChanges

DEFAULT_IMAGE_TOPIC = "image"
OUTPUTS = {"detections": Detection2DArray, "instance_mask": Image, "camera_info": CameraInfo, "overlay": Image}
OUTPUTS_3D = {"detections_3d": Detection3DArray, "points": PointCloud2, "markers": MarkerArray}
_TOPIC = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def output_namespace(image_topic: str) -> str:
    """The namespace of an image topic, relative: /front/image_raw -> front; /image -> "" (the node's own)."""
    return image_topic.strip("/").rpartition("/")[0]


def image_topics_error(image_topics: list[str]) -> str | None:
    """Why a list of image topics cannot name the node's cameras; None when it can."""
    for topic in image_topics:
        if not _TOPIC.fullmatch(topic):
            return (f"parameter 'image_topics': {topic!r} is no plain topic name (names of letters, digits and _ "
                    f"separated by /, without ~ or substitutions)")
    namespaces: dict[str, str] = {}
    for topic in image_topics:
        namespace = output_namespace(topic)
        if namespace in namespaces:
            outputs = Camera(topic, namespace).output_topic("detections")
            return (f"parameter 'image_topics': {namespaces[namespace]!r} and {topic!r} have the same namespace "
                    f"'/{namespace}', so both cameras would publish to {outputs}, ...; give each camera a namespace "
                    f"of its own")
        namespaces[namespace] = topic
    return None


@dataclass
class Camera:
    """One camera of the node: its image topic (as given), its outputs' namespace, and the node's state of it."""

    image_topic: str
    namespace: str
    camera_info: CameraInfoPairing = field(default_factory=CameraInfoPairing)
    sizes: SizeChanges = field(default_factory=SizeChanges)
    publishers: dict[str, object] = field(default_factory=dict)
    depth: DepthStream | None = None   # with `depth`: this camera's recent depth frames
    received: int = 0                  # frames that arrived (written by the image callback) ...
    last_received: float | None = None  # ... the latest at this time.monotonic()
    dropped: int = 0                   # frames replaced by a newer one of this camera before inference
    bad_inputs: int = 0                # frames that could not be used
    processed: int = 0                 # frames whose outputs were published (written by the inference thread)
    reported: tuple[int, int] = (0, 0)  # (received, processed) at the previous diagnostics report

    def arrived(self) -> None:
        self.received += 1
        self.last_received = time.monotonic()

    def output_topic(self, output: str) -> str:
        return f"~/{self.namespace}/{output}" if self.namespace else f"~/{output}"

    def subscribe_image(self, node, callback, qos, compressed: bool):
        """The node's subscription to this camera's image or, with `compressed`, to its compressed transport
        (image_transport naming: the compressed stream of <image> is <image>/compressed, after remapping)."""
        if compressed:
            topic = node.resolve_topic_name(self.image_topic) + "/compressed"
            return node.create_subscription(CompressedImage, topic, callback, qos)
        return node.create_subscription(Image, self.image_topic, callback, qos)

    def subscribe_camera_info(self, node, qos):
        """The node's subscription to the camera_info beside this camera's (remapped) image topic."""
        topic = camera_info_topic(node.resolve_topic_name(self.image_topic))
        return node.create_subscription(CameraInfo, topic, self.camera_info.add, qos)

    def subscribe_depth(self, node, qos, slop: float) -> list:
        """Subscriptions to this camera's depth image and depth camera_info, beside its image topic."""
        self.depth = DepthStream(slop)
        return self.depth.subscribe(node, qos, self.image_topic.rpartition("/")[0])

    def open_outputs(self, create_publisher, qos, overlay: bool, depth: bool = False) -> None:
        outputs = {name: msg_type for name, msg_type in OUTPUTS.items() if overlay or name != "overlay"}
        self.publishers = {name: create_publisher(msg_type, self.output_topic(name), qos)
                           for name, msg_type in (outputs | (OUTPUTS_3D if depth else {})).items()}

    def close_outputs(self, destroy_publisher) -> None:
        for publisher in self.publishers.values():
            destroy_publisher(publisher)
        self.publishers = {}

    @property
    def overlay_wanted(self) -> bool:
        overlay = self.publishers.get("overlay")
        return overlay is not None and overlay.get_subscription_count() > 0

    def publish(self, messages: dict[str, object]) -> None:
        for name, message in messages.items():
            if name in self.publishers:
                self.publishers[name].publish(message)
        self.processed += 1

    def size_change(self, height: int, width: int) -> str | None:
        """Why a frame of this size is a change for this camera (see `SizeChanges`); None when it is not."""
        change = self.sizes.check(height, width)
        return f"{self.image_topic}: {change}" if change and self.namespace else change


def cameras_of(image_topics: list[str] | None) -> list[Camera]:
    """The node's cameras for the parameter `image_topics` (None or empty: the one topic `image`); a
    ValueError says why the list cannot be used."""
    if not image_topics:
        return [Camera(DEFAULT_IMAGE_TOPIC, "")]
    error = image_topics_error(list(image_topics))
    if error:
        raise ValueError(error)
    return [Camera(topic, output_namespace(topic)) for topic in image_topics]


def diagnostic_values(cameras: list[Camera], period_s: float) -> dict[str, str]:
    """Each camera's rates over the period since the previous call, and its counts, as `camera <topic>: ...`
    keys of the node's /diagnostics status; none for a single camera (the node's own figures are its)."""
    if len(cameras) < 2:
        return {}
    values = {}
    for camera in cameras:
        received, processed = camera.received, camera.processed
        label = f"camera {camera.image_topic}"
        values.update({f"{label}: input rate (Hz)": f"{(received - camera.reported[0]) / period_s:.2f}",
                       f"{label}: output rate (Hz)": f"{(processed - camera.reported[1]) / period_s:.2f}",
                       f"{label}: frames received": str(received),
                       f"{label}: frames processed": str(processed),
                       f"{label}: frames dropped": str(camera.dropped),
                       f"{label}: bad input frames": str(camera.bad_inputs)})
        camera.reported = (received, processed)
    return values
