"""Predictor result -> the node's outputs: a mono16 label image, a vision_msgs/Detection2DArray and the overlay.

The two outputs describe the same instances: detection `id` "i" is exactly the set of pixels whose value
is i in the label image, and its bounding box and pixel count are measured on that set. Instances are
numbered 1..N in descending score order; where masks overlap the higher score wins, and an instance left
with no pixel of its own is dropped (so ids stay contiguous).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparseinst_core.inference import Instances, visualize

# mono16 label image: 0 is background, so at most 65535 instances
MAX_LABEL = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class InstanceLabels:
    """Instances of one image in output form; row i-1 of each array describes the instance with id i."""

    label_image: np.ndarray    # uint16 [H,W]: 0 background, i instance i
    class_ids: np.ndarray      # int64 [N]
    scores: np.ndarray         # float32 [N], descending
    boxes: np.ndarray          # int64 [N,4]: x_min, y_min, x_max, y_max (inclusive pixel indices)
    pixel_counts: np.ndarray   # int64 [N], each > 0

    @property
    def ids(self) -> np.ndarray:
        return np.arange(1, len(self.scores) + 1)

    def __len__(self) -> int:
        return len(self.scores)


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


def label_instances(result, allowed_classes: frozenset[int] | None = None,
                    max_instances: int = 100) -> InstanceLabels:
    """Predictor result -> `InstanceLabels`.

    result: has scores [K] float, labels [K] int and masks [K,H,W] bool, in any order. Instances of
    classes outside `allowed_classes` are ignored; of the rest, the `max_instances` best scores are kept.
    """
    scores, labels, masks = np.asarray(result.scores), np.asarray(result.labels), np.asarray(result.masks)
    if masks.ndim != 3 or not (len(scores) == len(labels) == len(masks)):
        raise ValueError(f"expected scores [K], labels [K], masks [K,H,W]; got {np.shape(scores)}, "
                         f"{np.shape(labels)}, {np.shape(masks)}")
    if not 0 <= max_instances <= MAX_LABEL:
        raise ValueError(f"max_instances must be in 0..{MAX_LABEL}, got {max_instances}")
    candidates = np.argsort(-scores.astype(np.float64), kind="stable")
    if allowed_classes is not None:
        candidates = candidates[np.isin(labels[candidates], list(allowed_classes))]
    candidates = candidates[:max_instances]

    # Paint in descending score order onto free pixels only, working inside each mask's bounding box: the
    # cost follows the instances' areas, not K full-image passes.
    label_image = np.zeros(masks.shape[1:], dtype=np.uint16)     # [H,W]
    kept, boxes, pixel_counts = [], [], []
    for candidate in candidates:
        mask = masks[candidate]
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            continue
        y0, y1 = rows[0], rows[-1] + 1
        cols = np.flatnonzero(mask[y0:y1].any(axis=0))
        x0, x1 = cols[0], cols[-1] + 1
        window = label_image[y0:y1, x0:x1]                       # a view: writes go to the label image
        visible = mask[y0:y1, x0:x1] & (window == 0)
        count = int(np.count_nonzero(visible))
        if count == 0:                                            # hidden by higher scores
            continue
        window[visible] = len(kept) + 1
        visible_rows = np.flatnonzero(visible.any(axis=1))
        visible_cols = np.flatnonzero(visible.any(axis=0))
        boxes.append((x0 + visible_cols[0], y0 + visible_rows[0], x0 + visible_cols[-1], y0 + visible_rows[-1]))
        kept.append(candidate)
        pixel_counts.append(count)
    kept = np.array(kept, dtype=np.int64)
    return InstanceLabels(label_image=label_image,
                          class_ids=labels.astype(np.int64)[kept],
                          scores=scores.astype(np.float32)[kept],
                          boxes=np.array(boxes, dtype=np.int64).reshape(-1, 4),
                          pixel_counts=np.array(pixel_counts, dtype=np.int64))


def draw_overlay(rgb: np.ndarray, instances: InstanceLabels, class_names) -> np.ndarray:
    """The published instances (after class filter and overlaps) drawn over the image: uint8 [H,W,3] RGB."""
    masks = instances.label_image[None] == instances.ids[:, None, None]     # [N,H,W]
    return visualize.draw_overlay(rgb, Instances(instances.scores, instances.class_ids, masks), class_names)


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
