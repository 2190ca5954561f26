"""Reading a recorded bag: opening it with clear errors, the image topic and the camera_info beside it, and
the recorded messages in recording order.

Messages are deserialised by rclpy from their recorded CDR bytes, so the pipeline gets exactly the messages
the node would have received (0.4-0.7 ms for a 640x480 image; rosbags' deserialiser and a conversion to the
rclpy message take 0.5-0.9 ms).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rclpy.serialization import deserialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ...camera_info import camera_info_topic
from ...depth_input import PairedDepth
from ...depth_pairing import DepthPairing
from .errors import Failure, UsageError
from .types import type_name

IMAGE_TYPES = {type_name(Image): Image, type_name(CompressedImage): CompressedImage}
COMPRESSED_SUFFIX = "/compressed"        # image_transport: <image>/compressed carries <image> compressed


@contextmanager
def open_bag(path: Path) -> Iterator[Reader]:
    """An open rosbags Reader of a bag folder, or of one .mcap/.db3 file; a corrupt or truncated bag is a `Failure`."""
    if not path.exists():
        raise UsageError(f"no bag at {path}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:          # whatever the storage layer raises, the bag cannot be used
        raise Failure(f"cannot read the bag {path}: {type(error).__name__}: {error}") from error
    try:
        yield reader
    finally:
        reader.close()


@dataclass(frozen=True)
class ImageTopic:
    """An image topic of a bag: its name, its message class (Image or CompressedImage) and connections."""

    name: str
    message_type: type
    connections: tuple[Connection, ...]

    @property
    def count(self) -> int:
        return sum(connection.msgcount for connection in self.connections)

    @property
    def camera_info_topic(self) -> str:
        """The camera_info beside the image: /cam/image_raw and /cam/image_raw/compressed -> /cam/camera_info."""
        base = self.name.removesuffix(COMPRESSED_SUFFIX) if self.message_type is CompressedImage else self.name
        return camera_info_topic(base)


def image_topics(reader: Reader) -> dict[str, str]:
    """Topic -> type of every Image and CompressedImage topic of the bag."""
    return {topic: info.msgtype for topic, info in sorted(reader.topics.items()) if info.msgtype in IMAGE_TYPES}


def find_image_topic(reader: Reader, name: str, bag: Path, option: str = "--image-topic") -> ImageTopic:
    """The image topic `name`; a usage error naming the bag's image topics when it is missing or not images."""
    connections = tuple(c for c in reader.connections if c.topic == name)
    available = ", ".join(f"{topic} ({msgtype})" for topic, msgtype in image_topics(reader).items()) or "none"
    if not connections:
        raise UsageError(f"{option} {name}: no such topic in {bag}; its image topics: {available}")
    msgtypes = sorted({c.msgtype for c in connections})
    if len(msgtypes) != 1 or msgtypes[0] not in IMAGE_TYPES:
        raise UsageError(f"{option} {name} holds {', '.join(msgtypes)}, not sensor_msgs/msg/Image or "
                         f"CompressedImage; the image topics of {bag}: {available}")
    return ImageTopic(name, IMAGE_TYPES[msgtypes[0]], connections)


@dataclass(frozen=True)
class RecordedMessage:
    """One recorded message: its position on its topic (from 0), bag timestamp (ns) and CDR bytes."""

    index: int
    timestamp: int
    raw: bytes
    connection: Connection

    def deserialize(self, message_type: type):
        return deserialize_message(self.raw, message_type)


def recorded_messages(reader: Reader, connections: tuple[Connection, ...], bag: Path) -> Iterator[RecordedMessage]:
    """The messages of `connections` in recording order; data the reader cannot decode is a `Failure`."""
    messages = reader.messages(connections=connections)
    index = 0
    while True:
        try:
            connection, timestamp, raw = next(messages)
        except StopIteration:
            return
        except Exception as error:      # a damaged chunk or page: nothing after it can be trusted
            topics = ", ".join(sorted({c.topic for c in connections}))
            raise Failure(f"the bag {bag} is damaged: cannot read past message {index} of {topics}: "
                          f"{type(error).__name__}: {error}") from error
        yield RecordedMessage(index, timestamp, bytes(raw), connection)
        index += 1


class RecordedCameraInfo:
    """The camera_info of a recording, matched to frames as the node matches them live: the message with the
    image's stamp, else the latest recorded before the image, else the first."""

    def __init__(self, messages: list[RecordedMessage]):
        self._messages = sorted(messages, key=lambda m: m.timestamp)
        self._timestamps = [m.timestamp for m in self._messages]
        self._by_stamp = {}
        for message in self._messages:
            stamp = message.deserialize(CameraInfo).header.stamp
            self._by_stamp[(stamp.sec, stamp.nanosec)] = message

    @classmethod
    def read(cls, reader: Reader, topic: str, bag: Path) -> RecordedCameraInfo | None:
        """The camera_info recorded on `topic`; None when the bag has none there."""
        connections = tuple(c for c in reader.connections if c.topic == topic and c.msgtype == type_name(CameraInfo))
        return cls(list(recorded_messages(reader, connections, bag))) if connections else None

    def match(self, header, timestamp: int) -> CameraInfo:
        """A new CameraInfo carrying `header`, for the frame recorded at `timestamp`."""
        message = self._by_stamp.get((header.stamp.sec, header.stamp.nanosec))
        if message is None:
            before = bisect.bisect_right(self._timestamps, timestamp)
            message = self._messages[max(before - 1, 0)]
        info = message.deserialize(CameraInfo)
        info.header = header
        return info


class RecordedDepth:
    """The depth stream of a recording, paired with frames as the node pairs them live: the depth image with the
    frame's stamp, else the nearest within `slop` seconds (`depth_pairing`), with the depth camera_info of its
    stamp (else the latest recorded before it). One pass indexes the depth images by stamp; each paired one is
    read again from the bag when needed, so the depth stream is never held in memory."""

    def __init__(self, reader: Reader, topic: ImageTopic, camera_info: RecordedCameraInfo | None, slop: float,
                 bag: Path):
        self._reader, self._topic, self._camera_info, self._bag = reader, topic, camera_info, bag
        self._pairing = DepthPairing(slop, keep=max(topic.count, 1))
        for recorded in recorded_messages(reader, topic.connections, bag):
            stamp = recorded.deserialize(topic.message_type).header.stamp
            self._pairing.add(stamp.sec * 10**9 + stamp.nanosec, recorded.timestamp)

    def match(self, header) -> PairedDepth | None:
        """The depth of the frame with `header`; None when no depth image lies within the slop."""
        timestamp = self._pairing.match(header.stamp.sec * 10**9 + header.stamp.nanosec)
        if timestamp is None:
            return None
        messages = self._reader.messages(connections=self._topic.connections, start=timestamp, stop=timestamp + 1)
        _, _, raw = next(messages)
        image = deserialize_message(bytes(raw), self._topic.message_type)
        info = self._camera_info.match(image.header, timestamp) if self._camera_info is not None else None
        return PairedDepth(image, info)
