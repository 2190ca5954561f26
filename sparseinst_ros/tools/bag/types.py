"""ROS message types for rosbags: the distribution's standard types, and vision_msgs from its .msg files.

rclpy serialises the outputs (the very bytes the node publishes); rosbags writes them and records each
type's definition and RIHS01 hash in the bag. The standard types come from rosbags' typestore of the ROS
distribution in use (`ROS_DISTRO`, else Kilted, the distribution of the project's wheels). rosbags ships no
vision_msgs: its types are registered from the .msg files of the vision_msgs package that rclpy imports
(in the venv the one built from ros_interfaces/, on a ROS installation the distribution's), so the
definitions written are those of the messages serialised; ros_interfaces/ itself where no installed package
has its .msg files.
"""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

DEFAULT_DISTRO = "kilted"
REPOSITORY_VISION_MSGS = Path(__file__).resolve().parents[3] / "ros_interfaces" / "vision_msgs" / "msg"


def ros_distro() -> Stores:
    """The typestore of `ROS_DISTRO` (set by a ROS installation's setup script), else of Kilted."""
    name = os.environ.get("ROS_DISTRO", "").strip().lower()
    try:
        return Stores(f"ros2_{name}")
    except ValueError:
        return Stores(f"ros2_{DEFAULT_DISTRO}")


def vision_msgs_definitions() -> Path:
    """The folder of vision_msgs' .msg files: <prefix>/share/vision_msgs/msg of the package rclpy imports
    (its Python code lies in <prefix>/[local/]lib/pythonX.Y/site-packages), else ros_interfaces/."""
    import vision_msgs
    package = Path(vision_msgs.__file__).resolve().parent
    for prefix in package.parents[2:5]:
        folder = prefix / "share" / "vision_msgs" / "msg"
        if folder.is_dir():
            return folder
    return REPOSITORY_VISION_MSGS


@cache
def output_typestore() -> Typestore:
    """The typestore of the distribution with vision_msgs registered."""
    store = get_typestore(ros_distro())
    definitions = {}
    for path in sorted(vision_msgs_definitions().glob("*.msg")):
        definitions.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(definitions)
    return store


def type_name(message_class: type) -> str:
    """An rclpy message class -> its ROS type name: sensor_msgs.msg.Image -> "sensor_msgs/msg/Image"."""
    package = message_class.__module__.split(".", 1)[0]
    return f"{package}/msg/{message_class.__name__}"
