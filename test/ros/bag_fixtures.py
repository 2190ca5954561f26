"""Recordings for the tests of `sparseinst_bag`, written with rosbags (its own CDR serialiser, as a recorder
would write them) from generated scenes: raw rgb8, bgr8 and mono8 frames or compressed JPEG, with a
camera_info beside the image topic."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from ros_harness import MIN_SIZE, scene_image
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

STORE = get_typestore(Stores.ROS2_KILTED)
IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
ENCODINGS = ("rgb8", "bgr8", "mono8", "jpeg")
START_NS = 1_700_000_000 * 10**9
FRAME_PERIOD_NS = 33_333_333


@dataclass(frozen=True)
class RecordedFrame:
    """A frame as the test recorded it: bag timestamp, header stamp and the RGB image the node must see."""

    timestamp: int
    sec: int
    nanosec: int
    rgb: np.ndarray          # uint8 [H,W,3]: what decoding the recorded message gives


def _header(sec: int, nanosec: int):
    types = STORE.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id="camera_optical")


def image_message(rgb: np.ndarray, encoding: str, sec: int, nanosec: int):
    """A rosbags sensor_msgs Image (or CompressedImage for "jpeg") of `rgb`, and the RGB a decoder gets from it."""
    header = _header(sec, nanosec)
    if encoding == "jpeg":
        data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return STORE.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                               data=data.reshape(-1)), decoded
    pixels = {"rgb8": rgb, "bgr8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
              "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    decoded = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB) if encoding == "mono8" else rgb
    channels = 1 if pixels.ndim == 2 else 3
    message = STORE.types["sensor_msgs/msg/Image"](
        header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
        step=pixels.shape[1] * channels, data=np.ascontiguousarray(pixels).reshape(-1))
    return message, decoded


def camera_info_message(sec: int, nanosec: int, height: int, width: int):
    return STORE.types["sensor_msgs/msg/CameraInfo"](
        header=_header(sec, nanosec), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([100.0, 0, width / 2, 0, 100.0, height / 2, 0, 0, 1]),
        r=np.eye(3).reshape(-1), p=np.array([100.0, 0, width / 2, 0, 0, 100.0, height / 2, 0, 0, 0, 1, 0]),
        binning_x=0, binning_y=0,
        roi=STORE.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False))


def write_bag(path: Path, encoding: str = "rgb8", count: int = 3, storage: str = "mcap", camera_info: bool = True,
              size: tuple[int, int] = (96, 128), corrupt: dict[int, object] | None = None) -> list[RecordedFrame]:
    """A bag of `count` generated scenes on IMAGE_TOPIC (COMPRESSED_TOPIC for "jpeg"); `corrupt` maps frame
    indices to a function that spoils the message before it is written. Returns the frames as recorded."""
    topic = COMPRESSED_TOPIC if encoding == "jpeg" else IMAGE_TOPIC
    msgtype = "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image"
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    frames = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_connection = writer.add_connection(topic, msgtype, typestore=STORE)
        info_connection = (writer.add_connection(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=STORE)
                           if camera_info else None)
        for index in range(count):
            timestamp = START_NS + index * FRAME_PERIOD_NS
            sec, nanosec = divmod(timestamp - 5_000_000, 10**9)          # stamped 5 ms before recording
            message, decoded = image_message(scene_image(*size, seed=index), encoding, sec, nanosec)
            if corrupt and index in corrupt:
                message = corrupt[index](message)
            writer.write(image_connection, timestamp, STORE.serialize_cdr(message, msgtype))
            if info_connection is not None:
                info = camera_info_message(sec, nanosec, *size)
                writer.write(info_connection, timestamp + 1000, STORE.serialize_cdr(info, info.__msgtype__))
            frames.append(RecordedFrame(timestamp, sec, nanosec, decoded))
    return frames


def write_params_file(path: Path, weights_file: Path, **parameters) -> Path:
    """The node's parameters file with the test model at the tests' input size, as a user would write it."""
    values = {"weights": str(weights_file), "device": "cpu", "min_size": MIN_SIZE, "max_size": 2 * MIN_SIZE,
              **parameters}
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
DEPTH_INFO_TOPIC = "/camera/aligned_depth_to_color/camera_info"


def write_rgbd_bag(path: Path, sequence) -> None:
    """Every frame of a generated RGB-D `sequence` (`sparseinst_core.data.rgbd_sequences`): rgb8 on IMAGE_TOPIC,
    16UC1 depth on DEPTH_TOPIC, each with its camera_info, all with the frame's stamp (depth recorded 2 ms later)."""
    types = STORE.types
    (width, height), (depth_width, depth_height) = sequence.config.colour_size, sequence.config.depth_size
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=STORE) for topic, msgtype in (
            (IMAGE_TOPIC, "sensor_msgs/msg/Image"), (CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo"),
            (DEPTH_TOPIC, "sensor_msgs/msg/Image"), (DEPTH_INFO_TOPIC, "sensor_msgs/msg/CameraInfo"))}
        for frame in sequence:
            timestamp = START_NS + round(frame.stamp * 1e9)
            sec, nanosec = divmod(timestamp, 10**9)
            colour, _ = image_message(frame.colour, "rgb8", sec, nanosec)
            depth = types["sensor_msgs/msg/Image"](
                header=_header(sec, nanosec), height=depth_height, width=depth_width, encoding="16UC1",
                is_bigendian=0, step=2 * depth_width, data=frame.depth.astype("<u2").view(np.uint8).reshape(-1))
            for topic, message, delay, k, size in (
                    (IMAGE_TOPIC, colour, 0, None, None), (CAMERA_INFO_TOPIC, None, 1000, sequence.colour_k,
                                                           (height, width)),
                    (DEPTH_TOPIC, depth, 2_000_000, None, None), (DEPTH_INFO_TOPIC, None, 2_001_000,
                                                                  sequence.depth_k, (depth_height, depth_width))):
                if message is None:
                    message = camera_info_message(sec, nanosec, *size)
                    message.k = k.reshape(-1)
                writer.write(connections[topic], timestamp + delay, STORE.serialize_cdr(message, message.__msgtype__))
