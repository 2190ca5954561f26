"""`sparseinst_bag export`: frames of an image topic to a COCO-format folder, optionally pre-labelled.

DIR/images/ holds the frames: compressed JPEG/PNG frames byte for byte as recorded, raw frames as PNG
(lossless, after the node's conversion to 8-bit RGB). DIR/annotations.json lists them as images (with
their position on the topic, header stamp and frame_id, and bag timestamp), the model's classes as
categories (category id = class id + 1) and, with `prelabel`, the instances the node would publish for
each frame (same `FrameProcessor`, thresholds, class filter and max_instances) as annotations: polygons,
area, bbox, iscrowd 0 and the instance's `score`, for a labelling tool to start from. The folder trains
with training/train.py: --train-json DIR/annotations.json --train-images DIR/images.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage
from tqdm import tqdm

from sparseinst_core.inference import LoadedPredictor

from ...conversions import ImageConversionError
from ...detections import InstanceLabels
from ...frame_processor import FrameProcessor, decode
from .errors import Failure
from .node_parameters import class_filter
from .output import SafeOutput
from .polygons import polygon_annotation
from .reading import ImageTopic, recorded_messages
from .summary import Summary

IMAGES = "images"
ANNOTATIONS = "annotations.json"
FILE_SIGNATURES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png"}


def export_recording(reader: Reader, bag: Path, topic: ImageTopic, output: SafeOutput, model: LoadedPredictor,
                     values: dict[str, object], *, every: int = 1, max_frames: int = 0, prelabel: bool = False,
                     progress: bool | None = None) -> Summary:
    """Export every `every`-th frame of `topic` (at most `max_frames`; 0: no limit) to the folder `output`."""
    processor = FrameProcessor(model, class_filter(values, model), values["max_instances"]) if prelabel else None
    summary = Summary("export", topic.name, done_label="exported", output=str(output.path),
                      instances=Counter() if prelabel else None)
    images, annotations = [], []
    started = time.monotonic()
    with output as folder, tqdm(total=topic.count, unit="frame", desc="export", dynamic_ncols=True,
                                disable=None if progress is None else not progress) as bar:
        (folder / IMAGES).mkdir(parents=True)
        for recorded in recorded_messages(reader, topic.connections, bag):
            bar.update(1)
            if max_frames and summary.done >= max_frames:
                break
            if recorded.index % every:
                continue
            summary.read += 1
            try:
                msg = recorded.deserialize(topic.message_type)
            except RuntimeError as error:                     # rclpy cannot deserialise the recorded bytes
                summary.count_failure(recorded.index, None, error)
                continue
            try:
                rgb = decode(msg)
            except ImageConversionError as error:
                summary.count_failure(recorded.index, msg.header.stamp, error)
                continue
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": _write_image(folder / IMAGES, recorded.index, msg, rgb),
                           "height": rgb.shape[0], "width": rgb.shape[1], "frame_index": recorded.index,
                           "frame_id": msg.header.frame_id, "bag_timestamp_ns": recorded.timestamp,
                           "stamp": {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec}})
            if processor is not None:
                (result,) = processor([msg])
                annotations += instance_annotations(result.instances, image_id, first_id=len(annotations) + 1)
                summary.instances.update(model.class_names[class_id] for class_id in result.instances.class_ids)
            summary.done += 1
        if not summary.done:
            raise Failure(f"no frame of {topic.name} was exported: {len(summary.failed)} of {summary.read} could not "
                          f"be decoded" + (f"; the first: {summary.failed[0]}" if summary.failed else ""))
        (folder / ANNOTATIONS).write_text(json.dumps(coco_dataset(
            images, annotations, model.class_names, bag, topic.name, model.description if prelabel else None)))
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def instance_annotations(instances: InstanceLabels, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations of the published instances of one image (instance i: the pixels labelled i)."""
    annotations = []
    for instance_id, class_id, score in zip(instances.ids, instances.class_ids, instances.scores):
        shape = polygon_annotation(instances.label_image == instance_id)
        if shape is not None:
            annotations.append({"id": first_id + len(annotations), "image_id": image_id,
                                "category_id": int(class_id) + 1, "iscrowd": 0, **shape, "score": float(score)})
    return annotations


def coco_dataset(images: list[dict], annotations: list[dict], class_names: list[str], bag: Path, topic: str,
                 prelabel_model: str | None) -> dict:
    return {
        "info": {"description": f"frames of {topic} from the bag {bag}", "source_bag": str(bag), "image_topic": topic,
                 "prelabel_model": prelabel_model,
                 "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": class_id + 1, "name": name, "supercategory": ""}
                       for class_id, name in enumerate(class_names)],
    }


def _write_image(folder: Path, index: int, msg, rgb: np.ndarray) -> str:
    """The frame's file (named by its position on the topic); returns its name."""
    if isinstance(msg, CompressedImage):
        data = bytes(msg.data)
        suffix = next((suffix for signature, suffix in FILE_SIGNATURES.items() if data.startswith(signature)), None)
        if suffix is not None:
            name = f"frame_{index:06d}{suffix}"
            (folder / name).write_bytes(data)
            return name
    name = f"frame_{index:06d}.png"
    if not cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise Failure(f"OpenCV could not write {folder / name}")
    return name
