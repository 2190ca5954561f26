"""`sparseinst_bag info`: what a bag holds, for choosing the --image-topic of `run` and `export`: each
topic's type and message count, the size and encoding of the first frame of each image topic, the
camera_info beside it, and the recording's start and duration."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage

from ...conversions import ImageConversionError
from ...frame_processor import decode
from .reading import IMAGE_TYPES, find_image_topic, recorded_messages


def describe_bag(reader: Reader, bag: Path) -> str:
    start = datetime.fromtimestamp(reader.start_time / 1e9, timezone.utc).isoformat(timespec="milliseconds") \
        if reader.message_count else "-"
    rows = [("topic", "type", "messages", "first frame")]
    for name, topic in sorted(reader.topics.items()):
        details = first_frame(reader, bag, name) if topic.msgtype in IMAGE_TYPES else ""
        rows.append((name, topic.msgtype or "?", str(topic.msgcount), details))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    table = ["  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]]).rstrip()
             for row in rows]
    return "\n".join([f"bag: {bag}", f"messages: {reader.message_count}, start {start}, "
                      f"duration {reader.duration / 1e9:.3f} s", *table])


def first_frame(reader: Reader, bag: Path, name: str) -> str:
    """"640x480 rgb8" (or "jpeg 640x480"), and the camera_info beside the topic when there is one."""
    topic = find_image_topic(reader, name, bag)
    recorded = next(recorded_messages(reader, topic.connections, bag), None)
    if recorded is None:
        return "no frames"
    try:
        msg = recorded.deserialize(topic.message_type)
        height, width = decode(msg).shape[:2]
    except (RuntimeError, ImageConversionError) as error:
        return f"cannot be decoded ({error})"
    kind = f"{msg.format or 'compressed'} {width}x{height}" if isinstance(msg, CompressedImage) else \
        f"{width}x{height} {msg.encoding}"
    camera_info = topic.camera_info_topic
    return kind + (f", camera_info {camera_info}" if camera_info in reader.topics else "")
