"""The camera_info that belongs to an image: where it is published, and which message goes with a frame.

The node republishes it with each output's header, so a consumer of the label image projects masks with
the intrinsics of exactly that frame.
"""
from __future__ import annotations

from collections import deque

from sensor_msgs.msg import CameraInfo


def camera_info_topic(image_topic: str) -> str:
    """The camera_info beside an image topic: /cam/image_raw -> /cam/camera_info (image_transport's rule)."""
    namespace = image_topic.rsplit("/", 1)[0]
    return f"{namespace}/camera_info"


class CameraInfoPairing:
    """The last few camera_info messages of the input camera; `match` picks the one for an image."""

    def __init__(self, keep: int = 10):
        self._recent: deque[CameraInfo] = deque(maxlen=keep)

    def add(self, msg: CameraInfo) -> None:
        self._recent.append(msg)

    @property
    def received(self) -> bool:
        return bool(self._recent)

    def match(self, header) -> CameraInfo | None:
        """A copy, carrying `header`, of the camera_info with the image's stamp, else of the latest one; None
        when none arrived. The stored messages are not modified."""
        candidates = list(self._recent)
        if not candidates:
            return None
        match = next((info for info in reversed(candidates) if info.header.stamp == header.stamp), candidates[-1])
        return CameraInfo(header=header, height=match.height, width=match.width,
                          distortion_model=match.distortion_model, d=match.d, k=match.k, r=match.r, p=match.p,
                          binning_x=match.binning_x, binning_y=match.binning_y, roi=match.roi)
