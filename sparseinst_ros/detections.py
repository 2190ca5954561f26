"""The node's detections: the class filter from its parameter, the overlay, and vision_msgs/Detection2DArray.

The instances come as `sparseinst_core.inference.label_image.InstanceLabels`: detection `id` "i" is exactly
the set of pixels whose value is i in the label image (published as mono16), and its bounding box is
measured on that set.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparseinst_core.inference import Instances, visualize
from sparseinst_core.inference.label_image import InstanceLabels


def resolve_class_filter(classes: Sequence[str], class_names: Sequence[str]) -> frozenset[int] | None:
    """Class filter entries (names or integer ids, as strings) -> allowed class ids; empty -> None (all)."""
    allowed = set()
    for entry in classes:
        entry = str(entry).strip()
        if entry.isdigit():
            class_id = int(entry)
            if class_id >= len(class_names):
                raise ValueError(f"class id {class_id} in the class filter is out of range: the model has "
                                 f"{len(class_names)} classes (0..{len(class_names) - 1})")
        elif entry in class_names:
            class_id = list(class_names).index(entry)
        else:
            raise ValueError(f"unknown class {entry!r} in the class filter; known classes: "
                             f"{', '.join(class_names)} (or their ids 0..{len(class_names) - 1})")
        allowed.add(class_id)
    return frozenset(allowed) if allowed else None


def draw_overlay(rgb: np.ndarray, instances: InstanceLabels, class_names) -> np.ndarray:
    """The published instances (after class filter and overlaps) drawn over the image with their detection ids
    ("class id score"): uint8 [H,W,3] RGB."""
    drawn = Instances(instances.scores, instances.class_ids, mask_crops=instances.mask_crops())
    return visualize.draw_overlay(rgb, drawn, class_names, ids=instances.ids)


def box_center_size(box: Sequence[int]) -> tuple[float, float, float, float]:
    """Inclusive pixel bounds -> (center x, center y, size x, size y) in pixel coordinates.

    Pixel (u, v) has its centre at (u, v), as in camera_info/image_geometry, so a box covering columns
    x_min..x_max is centred at their mean and is x_max - x_min + 1 pixels wide.
    """
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    return (x_min + x_max) / 2.0, (y_min + y_max) / 2.0, float(x_max - x_min + 1), float(y_max - y_min + 1)


def to_detection_array(instances: InstanceLabels, header):
    """`InstanceLabels` -> vision_msgs/Detection2DArray stamped with `header`.

    Each detection's `id` is its value in the label image; `results[0].hypothesis` holds the class id
    (as a string, vision_msgs' convention: names come from the class list) and the score.
    """
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    array_msg = Detection2DArray(header=header)
    for instance_id, class_id, score, box in zip(instances.ids, instances.class_ids, instances.scores,
                                                 instances.boxes):
        detection = Detection2D(header=header, id=str(int(instance_id)))
        center_x, center_y, size_x, size_y = box_center_size(box)
        detection.bbox.center.position.x = center_x
        detection.bbox.center.position.y = center_y
        detection.bbox.size_x = size_x
        detection.bbox.size_y = size_y
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(class_id))
        hypothesis.hypothesis.score = float(score)
        detection.results.append(hypothesis)
        array_msg.detections.append(detection)
    return array_msg
