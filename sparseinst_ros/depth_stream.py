"""The node's depth input: `depth/image` and `depth/camera_info` (relative, remappable like `image`), the
recent depth frames, and the one that goes with a colour frame (`depth_pairing`: exact stamp, else the nearest
within `depth_slop`)."""
from __future__ import annotations

from sensor_msgs.msg import CameraInfo, Image

from .camera_info import CameraInfoPairing
from .depth_input import PairedDepth
from .depth_pairing import NANOSECONDS, DepthPairing


def stamp_ns(header) -> int:
    return header.stamp.sec * NANOSECONDS + header.stamp.nanosec


class DepthStream:
    """The depth images and their camera_infos received so far (a few, bounded)."""

    def __init__(self, slop: float):
        self.images = DepthPairing(slop)
        self.camera_infos = CameraInfoPairing()

    def subscribe(self, node, qos, namespace: str = "") -> list:
        """Subscriptions to `<namespace>/depth/image` and `<namespace>/depth/camera_info` on `node` (relative
        `depth/image` and `depth/camera_info` without a namespace)."""
        prefix = f"{namespace}/" if namespace else ""
        return [node.create_subscription(Image, f"{prefix}depth/image", self.on_image, qos),
                node.create_subscription(CameraInfo, f"{prefix}depth/camera_info", self.camera_infos.add, qos)]

    def on_image(self, msg: Image) -> None:
        self.images.add(stamp_ns(msg.header), msg)

    def paired(self, header) -> PairedDepth | None:
        """The depth of the colour frame with `header` (waiting briefly for one on its way), with the depth
        camera_info of its stamp (else the latest); None when no depth image lies within the slop."""
        image = self.images.wait_match(stamp_ns(header))
        if image is None:
            return None
        return PairedDepth(image, self.camera_infos.match(image.header))
