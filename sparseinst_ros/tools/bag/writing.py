"""Writing a rosbag2 (mcap or sqlite3) of rclpy messages, serialised by rclpy: the bytes the node publishes.

Each topic's connection carries its type's definition and RIHS01 hash from `types.output_typestore`, so
ros2 bag, Foxglove and rosbags read the bag without this project. Recorded messages copied from the input
keep the input's definition and hash.
"""
from __future__ import annotations

from pathlib import Path

from rclpy.serialization import serialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from .reading import RecordedMessage
from .types import output_typestore, type_name

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class OutputBag:
    """A new bag at `path` (which must not exist); `close` completes it, `abort` leaves it incomplete."""

    def __init__(self, path: Path, storage: str = "mcap"):
        self._writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGE[storage])
        self._writer.open()
        self._connections: dict[str, Connection] = {}

    def write(self, topic: str, message, timestamp: int) -> None:
        """Serialise an rclpy message onto `topic` at bag time `timestamp` (ns)."""
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._connections[topic] = self._writer.add_connection(
                topic, type_name(type(message)), typestore=output_typestore())
        self._writer.write(connection, timestamp, serialize_message(message))

    def write_recorded(self, topic: str, recorded: RecordedMessage) -> None:
        """Copy a recorded message as it is, with its recorded definition and hash where the input has them."""
        connection = self._connections.get(topic)
        if connection is None:
            source = recorded.connection
            known = bool(source.msgdef.data and source.digest)
            connection = self._connections[topic] = self._writer.add_connection(
                topic, source.msgtype, msgdef=source.msgdef.data if known else None,
                rihs01=source.digest if known else None, typestore=output_typestore())
        self._writer.write(connection, recorded.timestamp, recorded.raw)

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()
