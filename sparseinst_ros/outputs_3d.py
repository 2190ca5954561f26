"""The node's 3D outputs and its class map as messages: Detection3DArray, PointCloud2, MarkerArray, LabelInfo.

Metres, in the camera optical frame of the depth image (header frame_id: the depth image's; stamp: the colour
image's). Detection `id` i is the 2D detection's id and the label image's value i, so a consumer joins the
2D, 3D and point outputs on it (the point cloud's `id` field carries it per point). Instances without 3D (too
few valid depth pixels) are left out of the 3D outputs and keep their 2D detection.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from sparseinst_core.scene import Instance3D

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<u2"), ("_pad", "<u2")])   # 16 bytes
TEXT_HEIGHT = 0.08           # metres
BOX_ALPHA = 0.4


def detections_3d_message(header, ids: Sequence[int], class_ids: Sequence[int], scores: Sequence[float],
                          instances: Sequence[Instance3D | None], class_names: Sequence[str]):
    """vision_msgs/Detection3DArray: per instance with 3D, `id`, results[0] = class name and score with the
    centroid as pose position, and the oriented box (centre, quaternion x y z w, size)."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    array_msg = Detection3DArray(header=header)
    for instance_id, class_id, score, instance in zip(ids, class_ids, scores, instances):
        if instance is None:
            continue
        detection = Detection3D(header=header, id=str(int(instance_id)))
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = class_names[int(class_id)]
        hypothesis.hypothesis.score = float(score)
        position = hypothesis.pose.pose.position
        position.x, position.y, position.z = (float(v) for v in instance.centroid)
        detection.results.append(hypothesis)
        box = detection.bbox
        box.center.position.x, box.center.position.y, box.center.position.z = (float(v) for v in instance.box.centre)
        orientation = box.center.orientation
        orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in instance.box.quaternion)
        box.size.x, box.size.y, box.size.z = (float(v) for v in instance.box.size)
        array_msg.detections.append(detection)
    return array_msg


def points_message(header, ids: Sequence[int], instances: Sequence[Instance3D | None]) -> PointCloud2:
    """sensor_msgs/PointCloud2 of the instances' points: float32 x, y, z and uint16 id (16 bytes a point, the
    last 2 padding), unordered (height 1), little endian. Each instance brings its `points` (already at most
    max_points_per_instance)."""
    pieces = [(int(instance_id), instance.points) for instance_id, instance in zip(ids, instances)
              if instance is not None]
    cloud = np.zeros(sum(len(points) for _, points in pieces), POINT_DTYPE)           # (P,)
    start = 0
    for instance_id, points in pieces:
        end = start + len(points)
        for axis, name in enumerate("xyz"):
            cloud[name][start:end] = points[:, axis]
        cloud["id"][start:end] = instance_id
        start = end
    fields = [PointField(name=name, offset=POINT_DTYPE.fields[name][1], datatype=datatype, count=1)
              for name, datatype in (("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
                                     ("id", PointField.UINT16))]
    return PointCloud2(header=header, height=1, width=len(cloud), fields=fields, is_bigendian=False,
                       point_step=POINT_DTYPE.itemsize, row_step=POINT_DTYPE.itemsize * len(cloud),
                       data=cloud.tobytes(), is_dense=True)


def class_colour(class_id: int) -> tuple[float, float, float]:
    """A distinct, stable colour per class (golden-ratio hues)."""
    return colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.8, 0.95)


def markers_message(header, ids: Sequence[int], class_ids: Sequence[int], instances: Sequence[Instance3D | None],
                    class_names: Sequence[str]) -> MarkerArray:
    """visualization_msgs/MarkerArray for rviz: DELETEALL first (markers of objects gone vanish), then per
    instance with 3D a CUBE (its oriented box, namespace "boxes") and a TEXT_VIEW_FACING "class id" above it
    (namespace "labels"), both with marker id = detection id."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    for instance_id, class_id, instance in zip(ids, class_ids, instances):
        if instance is None:
            continue
        red, green, blue = class_colour(int(class_id))
        box = Marker(header=header, ns="boxes", id=int(instance_id), type=Marker.CUBE, action=Marker.ADD)
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in instance.box.centre)
        orientation = box.pose.orientation
        orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in instance.box.quaternion)
        box.scale.x, box.scale.y, box.scale.z = (max(float(v), 1e-3) for v in instance.box.size)
        box.color.r, box.color.g, box.color.b, box.color.a = red, green, blue, BOX_ALPHA
        text = Marker(header=header, ns="labels", id=int(instance_id), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{class_names[int(class_id)]} {int(instance_id)}")
        text.pose.position.x, text.pose.position.z = float(instance.box.centre[0]), float(instance.box.centre[2])
        # optical frame: y points down, so "above the box" is its top (smallest y) less a little
        text.pose.position.y = float(instance.box.centre[1] - instance.box.size[1] / 2 - TEXT_HEIGHT)
        text.pose.orientation.w = 1.0
        text.scale.z = TEXT_HEIGHT
        text.color.r, text.color.g, text.color.b, text.color.a = red, green, blue, 1.0
        markers += [box, text]
    return MarkerArray(markers=markers)


def label_info_message(header, class_names: Sequence[str], allowed_classes: frozenset[int] | None,
                       threshold: float):
    """vision_msgs/LabelInfo: the classes the node may publish (all, or the class filter's) by id, and the
    score threshold."""
    from vision_msgs.msg import LabelInfo, VisionClass

    class_map = [VisionClass(class_id=class_id, class_name=name) for class_id, name in enumerate(class_names)
                 if allowed_classes is None or class_id in allowed_classes]
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))
