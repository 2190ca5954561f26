"""Writing a rosbag2 (mcap or sqlite3) of rclpy messages, serialised by rclpy: the bytes the node publishes.

Each topic's connection carries its type's definition and RIHS01 hash from `types.output_typestore`, so
ros2 bag, Foxglove and rosbags read the bag without this project. Recorded messages copied from the input
keep the input's definition and hash. `WriterThread` serialises and writes in a thread of its own, so that
the bag I/O of one frame overlaps the inference of the next.
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import suppress
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


class WriterThread:
    """An `OutputBag` written from a thread of its own: batches of messages of one bag timestamp, in the order
    given, at most `depth` waiting. The thread opens, writes and completes (or abandons) the bag: sqlite3
    storage may only be used by the thread that opened it. An error in the thread is raised again by the next
    `put` or by `finish`."""

    def __init__(self, path: Path, storage: str = "mcap", depth: int = 4):
        self._path, self._storage = path, storage
        self._batches: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stopping = False
        self.seconds = 0.0                           # spent making, serialising and writing messages
        self._thread = threading.Thread(target=self._run, name="bag_writer", daemon=True)
        self._thread.start()

    def put(self, timestamp: int, messages: list[tuple[str, object]], recorded: list[tuple[str, RecordedMessage]]):
        """Queue rclpy `messages` and `recorded` messages (copied as recorded), (topic, message) pairs, to be
        written at bag time `timestamp`. A message may be given as a function that makes it, called in the
        thread (work that needs no model, overlapping the next inference)."""
        self._raise_error()
        self._batches.put((timestamp, messages, recorded))

    def finish(self) -> None:
        """Write what waits and complete the bag; raises the thread's error if it had one."""
        self._batches.put(None)
        self._thread.join()
        self._raise_error()

    def stop(self) -> None:
        """Abandon the bag without writing what waits and without raising (the caller is handling an error)."""
        self._stopping = True
        self._batches.put(None)
        self._thread.join()

    def _run(self) -> None:
        outputs, finished = None, False
        try:
            outputs = OutputBag(self._path, self._storage)
            while (batch := self._batches.get()) is not None:
                if not self._stopping:
                    self._write(outputs, *batch)
            finished = True
            if self._stopping:
                outputs.abort()
            else:
                outputs.close()
        except BaseException as error:              # handed to the main thread
            self._error = error
            if outputs is not None:
                with suppress(Exception):
                    outputs.abort()
            while not finished and self._batches.get() is not None:
                pass                                # `put` must not block forever

    def _write(self, outputs: OutputBag, timestamp: int, messages, recorded) -> None:
        start = time.monotonic()
        for topic, message in messages:
            outputs.write(topic, message() if callable(message) else message, timestamp)
        for topic, message in recorded:
            outputs.write_recorded(topic, message)
        self.seconds += time.monotonic() - start

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
