"""Objects in 3D and over time, without ROS: camera intrinsics and depth units (camera), instance masks as
crops (masks), per-instance points, centroid and oriented box from registered depth (geometry), and
persistent track ids (tracking). Numpy in, dataclasses out; metres and seconds; camera optical frame
(x right, y down, z forward). Imports the model, I/O and inference layers only.
"""
from .camera import DEPTH_ENCODINGS, PinholeCamera, depth_to_metres
from .geometry import FrameGeometry, GeometryOptions, Instance3D, OrientedBox, instance_3d, instances_3d
from .masks import InstanceMask, mask_iou, masks_from_label_image
from .tracking import MAX_TRACK_ID, MaskTracker, Observation, TrackerConfig, TrackIds

__all__ = [
    "DEPTH_ENCODINGS", "FrameGeometry", "GeometryOptions", "Instance3D", "InstanceMask", "MAX_TRACK_ID", "MaskTracker",
    "Observation", "OrientedBox", "PinholeCamera", "TrackIds", "TrackerConfig", "depth_to_metres", "instance_3d",
    "instances_3d", "mask_iou", "masks_from_label_image",
]
