"""Is the camera stream reaching the node whole? Transport configuration checks and measured loss.

Two signals, because they fail differently:
- `lossy_fastdds_configuration`: this process' own Fast DDS set-up is known to lose camera-size
  best-effort images between processes (the default transports: see docs/ros.md, "Transport").
- `SequenceGapCounter`: frames that were published but never reached the subscription, counted from the
  gaps in each publisher's sequence numbers (rmw `MessageInfo`). This sees loss whatever its cause: a
  camera driver started elsewhere without the product's profile, a saturated network, a full queue.
And what a refused oversize message leaves behind in the middleware (`ReceiveBuffers`).
"""
from __future__ import annotations

import os
import time

import rclpy

# Fast DDS' default shared-memory segment is 512 KiB; larger best-effort samples fall back to fragmented
# UDP between processes and are mostly lost.
LARGE_SAMPLE_BYTES = 512 * 1024
TRANSPORT_ADVICE = ("give every process (camera driver and this node) a Fast DDS profile with a large shared-memory "
                    "segment: FASTDDS_DEFAULT_PROFILES_FILE=<sparseinst_ros>/config/fastdds_large_data.xml (the "
                    "launch files set it; see the README)")


class SequenceGapCounter:
    """Counts messages lost before the subscription from each publisher's publication sequence numbers.

    `add(info)` takes rclpy's `MessageInfo` of a received message and returns how many messages of that
    publisher were skipped since the previous one. A sequence number that goes backwards (a restarted
    publisher, or reordering) restarts the count for that publisher without counting loss; messages
    without sequence numbers (an rmw that does not provide them) are not counted.
    """

    def __init__(self):
        self._last: dict[bytes, int] = {}     # publisher gid -> last publication sequence number

    def add(self, info) -> int:
        sequence = info.get("publication_sequence_number") if info else None
        if not sequence:
            return 0
        gid = info.get("publisher_gid") or {}
        publisher = bytes(gid.get("data", b""))
        previous = self._last.get(publisher)
        self._last[publisher] = sequence
        return sequence - previous - 1 if previous is not None and sequence > previous else 0

    def forget_publishers(self) -> None:
        """Start afresh for every publisher (after a pause of the subscription: what was published
        meanwhile was never meant to arrive)."""
        self._last.clear()


def lossy_fastdds_configuration(environ=os.environ) -> str | None:
    """Why Fast DDS, as configured by `environ`, loses large best-effort samples between processes; None
    when it is configured for them (a profiles file, or LARGE_DATA with discovery beyond localhost)."""
    if "fastrtps" not in rclpy.get_rmw_implementation_identifier():
        return None
    if environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return None
    large_data = environ.get("FASTDDS_BUILTIN_TRANSPORTS", "").upper() in ("LARGE_DATA", "LARGE_DATAV6")
    localhost = (environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
                 or environ.get("ROS_LOCALHOST_ONLY") == "1")
    if large_data and not localhost:
        return None
    if large_data:
        return ("FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA has no effect with localhost-only discovery "
                "(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), and Fast DDS falls back to transports that lose "
                "large images")
    return "Fast DDS runs with its default transports, which lose large best-effort images between processes"


class ReceiveBuffers:
    """When to renew the image subscription so that the middleware lets go of a buffer grown for nothing.

    Fast DDS (rmw_fastrtps' default history memory policy, PREALLOCATED_WITH_REALLOC) keeps each subscription's
    receive buffers as large as the largest message it delivered, for the life of the subscription: one
    10000x10000 rgb8 frame (300 MB), refused by the node, left the node 300 MB larger, and destroying the
    subscription gave it back. So a refused message larger than any accepted one (and than `min_bytes`) renews
    the subscription, at most once per `min_interval_s` (a stream of such messages keeps its buffer anyway).
    """

    def __init__(self, min_bytes: int = 32 * 2**20, min_interval_s: float = 1.0, clock=time.monotonic):
        self.min_bytes = min_bytes
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._largest_accepted = 0
        self._renewed_at: float | None = None

    def accepted(self, size: int) -> None:
        self._largest_accepted = max(self._largest_accepted, size)

    def refused(self, size: int) -> bool:
        """A message of `size` bytes was refused; True when the subscription should be renewed now."""
        if size <= max(self.min_bytes, self._largest_accepted):
            return False
        now = self._clock()
        if self._renewed_at is not None and now - self._renewed_at < self.min_interval_s:
            return False
        self._renewed_at = now
        return True
