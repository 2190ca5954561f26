"""One camera frame's way from its image message to the output messages, without a running node.

The node publishes what `FrameProcessor` returns, and the recorded-data tools write the same messages into
a bag: both run the very same decoding, predictor call, class filter, label image and message building.
A cycle may hold several frames (several cameras): they go through the predictor as one batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from sparseinst_core.inference import LoadedPredictor
from sparseinst_core.inference.label_image import InstanceLabels, label_instances

from .conversions import compressed_to_rgb, image_to_rgb, numpy_to_image
from .detections import draw_overlay, to_detection_array


@dataclass
class FrameOutputs:
    """The output messages of one frame, by output name (the node's topic `~/<name>`), and what they came from."""

    messages: dict[str, object]
    instances: InstanceLabels
    image_size: tuple[int, int]                   # (height, width) of the decoded image
    timings_ms: dict[str, float] = field(default_factory=dict)


def decode(msg: Image | CompressedImage) -> np.ndarray:
    """Any image message the node accepts -> uint8 (H, W, 3) RGB; raises ImageConversionError naming the cause."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


class FrameProcessor:
    """Runs a loaded predictor on image messages and builds the node's outputs for each.

    `allowed_classes` (None: all) and `max_instances` select what is published; they are applied by the
    predictor before any mask is resized, as are the thresholds. They may change between calls.
    """

    def __init__(self, model: LoadedPredictor, allowed_classes: frozenset[int] | None = None,
                 max_instances: int = 100):
        self.model = model
        self.allowed_classes = allowed_classes
        self.max_instances = max_instances

    @property
    def allowed_classes(self) -> frozenset[int] | None:
        return self.model.predictor.classes

    @allowed_classes.setter
    def allowed_classes(self, classes: frozenset[int] | None) -> None:
        self.model.predictor.classes = classes

    @property
    def max_instances(self) -> int:
        return self.model.predictor.max_instances

    @max_instances.setter
    def max_instances(self, count: int) -> None:
        self.model.predictor.max_instances = count

    def __call__(self, msgs: list[Image | CompressedImage], camera_infos: list[CameraInfo | None] | None = None,
                 overlay: bool = False) -> list[FrameOutputs]:
        """Outputs for each message, in order; `camera_infos[i]` (already carrying the image's header) is
        passed through as the "camera_info" output; `overlay` draws "overlay" too."""
        start = time.monotonic()
        images = [decode(msg) for msg in msgs]
        decoded = time.monotonic()
        results = self.model.predictor(images)
        predicted = time.monotonic()
        camera_infos = camera_infos or [None] * len(msgs)
        outputs = []
        for msg, rgb, result, camera_info in zip(msgs, images, results, camera_infos):
            header = msg.header
            instances = label_instances(result, max_instances=self.max_instances)
            messages = {"instance_mask": numpy_to_image(instances.label_image, "mono16", header),
                        "detections": to_detection_array(instances, header)}
            if overlay:
                drawn = draw_overlay(rgb, instances, self.model.class_names)
                messages["overlay"] = numpy_to_image(drawn, "rgb8", header)
            if camera_info is not None:
                messages["camera_info"] = camera_info
            outputs.append(FrameOutputs(messages, instances, rgb.shape[:2]))
        built = time.monotonic()
        timings = {"decode": (decoded - start) * 1e3, "inference": (predicted - decoded) * 1e3,
                   "outputs": (built - predicted) * 1e3}
        for output in outputs:
            output.timings_ms = timings
        return outputs
