"""One camera frame's way from its image message to the output messages, without a running node.

The node publishes what `FrameProcessor` returns, and the recorded-data tools write the same messages into
a bag: both run the very same decoding, predictor call, class filter, label image and message building.
A cycle may hold several frames (several cameras): they go through the predictor as one batch.

With tracking (`InstanceTracking`, one tracker per camera stream: the image's frame_id) the detection ids
are track ids, and the label image is relabelled to match (pixel value == detection id). With depth (a
`PairedDepth`, or None when none was found, per frame) the 3D outputs come too: detections_3d, points,
markers; a depth frame that cannot be used leaves the frame its 2D outputs and says why (`depth_problem`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from sparseinst_core.inference import LoadedPredictor
from sparseinst_core.inference.label_image import InstanceLabels, label_instances
from sparseinst_core.scene import FrameGeometry, GeometryOptions, instances_3d

from .conversions import compressed_to_rgb, image_to_rgb, numpy_to_image
from .depth_input import DepthProblem, PairedDepth, registered_depth
from .detections import draw_overlay, to_detection_array
from .instance_tracking import InstanceTracking, TrackingSettings, instance_masks
from .outputs_3d import detections_3d_message, markers_message, points_message


@dataclass
class FrameOutputs:
    """The output messages of one frame, by output name (the node's topic `~/<name>`), and what they came from."""

    messages: dict[str, object]
    instances: InstanceLabels
    image_size: tuple[int, int]                   # (height, width) of the decoded image
    timings_ms: dict[str, float] = field(default_factory=dict)
    depth_problem: DepthProblem | None = None     # why a frame with depth on got no 3D
    num_without_3d: int = 0                       # instances with too few valid depth points for 3D


def decode(msg: Image | CompressedImage) -> np.ndarray:
    """Any image message the node accepts -> uint8 (H, W, 3) RGB; raises ImageConversionError naming the cause."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


class FrameProcessor:
    """Runs a loaded predictor on image messages and builds the node's outputs for each.

    `allowed_classes` (None: all) and `max_instances` select what is published; they are applied by the
    predictor before any mask is resized, as are the thresholds. They may change between calls.
    `tracking` None: ids 1..N in descending score order in each frame.
    """

    def __init__(self, model: LoadedPredictor, allowed_classes: frozenset[int] | None = None,
                 max_instances: int = 100, tracking: InstanceTracking | None = None,
                 geometry: GeometryOptions = GeometryOptions()):
        self.model = model
        self.allowed_classes = allowed_classes
        self.max_instances = max_instances
        self.tracking = tracking
        self.geometry = geometry

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
                 overlay: bool | list[bool] = False, depths: list[PairedDepth | None] | None = None
                 ) -> list[FrameOutputs]:
        """Outputs for each message, in order; `camera_infos[i]` (already carrying the image's header) is
        passed through as the "camera_info" output; `overlay` draws "overlay" too, for every frame or for the
        frames whose flag is set (a camera whose overlay nobody watches is not drawn); `depths` (None: depth
        off) gives each frame's depth for the 3D outputs."""
        start = time.monotonic()
        overlays = overlay if isinstance(overlay, list) else [bool(overlay)] * len(msgs)
        images = [decode(msg) for msg in msgs]
        decoded = time.monotonic()
        results = self.model.predictor(images)
        predicted = time.monotonic()
        camera_infos = camera_infos or [None] * len(msgs)
        outputs = []
        for index, (msg, rgb, result, camera_info) in enumerate(zip(msgs, images, results, camera_infos)):
            header = msg.header
            instances = label_instances(result, max_instances=self.max_instances)
            masks = instance_masks(instances) if self.tracking is not None or depths is not None else None
            geometry, problem = None, None
            if depths is not None:
                try:
                    geometry = self._geometry(msg, rgb.shape[:2], camera_info, depths[index], masks)
                except DepthProblem as error:
                    problem = error
            if self.tracking is not None:
                centroids = [None if g is None else g.centroid for g in geometry.instances] if geometry else None
                instances, _ = self.tracking.assign(header.frame_id, header.stamp.sec + 1e-9 * header.stamp.nanosec,
                                                    instances, masks, centroids)
            messages = {"instance_mask": numpy_to_image(instances.label_image, "mono16", header),
                        "detections": to_detection_array(instances, header)}
            if geometry is not None:
                messages.update(self._messages_3d(header, depths[index].image.header.frame_id, instances, geometry))
            if overlays[index]:
                drawn = draw_overlay(rgb, instances, self.model.class_names)
                messages["overlay"] = numpy_to_image(drawn, "rgb8", header)
            if camera_info is not None:
                messages["camera_info"] = camera_info
            outputs.append(FrameOutputs(messages, instances, rgb.shape[:2], depth_problem=problem,
                                        num_without_3d=geometry.num_without_3d if geometry else 0))
        built = time.monotonic()
        timings = {"decode": (decoded - start) * 1e3, "inference": (predicted - decoded) * 1e3,
                   "outputs": (built - predicted) * 1e3}
        for output in outputs:
            output.timings_ms = timings
        return outputs

    def _geometry(self, msg, image_size: tuple[int, int], camera_info: CameraInfo | None, depth: PairedDepth | None,
                  masks: list) -> FrameGeometry:
        """The 3D of the instances `masks` of the frame `msg`; DepthProblem when its depth cannot be used."""
        registered = registered_depth(msg, camera_info, depth, image_size)
        return instances_3d(masks, registered.metres, registered.depth_camera, registered.colour_camera, self.geometry)

    def _messages_3d(self, colour_header, frame_id: str, instances: InstanceLabels, geometry: FrameGeometry) -> dict:
        """detections_3d, points and markers: the colour image's stamp, the depth image's frame_id."""
        header = type(colour_header)(stamp=colour_header.stamp, frame_id=frame_id)
        names = self.model.class_names
        ids, class_ids = instances.ids.tolist(), instances.class_ids.tolist()
        return {"detections_3d": detections_3d_message(header, ids, class_ids, instances.scores.tolist(),
                                                       geometry.instances, names),
                "points": points_message(header, ids, geometry.instances),
                "markers": markers_message(header, ids, class_ids, geometry.instances, names)}


def processor_from_parameters(model: LoadedPredictor, allowed_classes: frozenset[int] | None,
                              values: Mapping[str, object], every_frame_processed: bool) -> FrameProcessor:
    """The `FrameProcessor` the node's parameter values describe (max_instances, tracking, track_min_hits,
    track_max_age, max_points_per_instance); `every_frame_processed`: see `InstanceTracking`."""
    tracking = InstanceTracking(TrackingSettings(values["track_min_hits"], values["track_max_age"]),
                                every_frame_processed) if values["tracking"] else None
    return FrameProcessor(model, allowed_classes, values["max_instances"], tracking,
                          GeometryOptions(max_points_per_instance=values["max_points_per_instance"]))
