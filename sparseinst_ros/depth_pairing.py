"""Which depth frame goes with a colour frame: the same stamp, else the nearest within a slop.

A registered depth stream (RealSense `aligned_depth_to_color`, `depth_image_proc/register`) carries the colour
frame's stamp, but arrives on its own topic, possibly a little after the colour image. `DepthPairing` keeps
the last few depth frames (bounded) and `match` picks one for a colour stamp: an exact stamp first, else the
nearest within `slop` seconds. `wait_match` waits a little (wall time) for the depth of a colour frame that
has not arrived yet: the answer is final once a depth frame at or after the colour stamp is in, since later
ones only lie further away.

ROS-free: stamps are integer nanoseconds, frames are whatever the caller stores (the node: depth image and
camera_info messages).
"""
from __future__ import annotations

import threading
from collections import deque

NANOSECONDS = 10**9
DEPTH_WAIT_SECONDS = 0.1      # how long the inference thread waits for a depth frame still on its way


class DepthPairing:
    """The last `keep` depth frames by stamp; `add` from the subscription, `match`/`wait_match` from inference."""

    def __init__(self, slop: float, keep: int = 10):
        if slop < 0:
            raise ValueError(f"the slop must not be negative, got {slop}")
        self.slop_ns = round(slop * NANOSECONDS)
        self._frames: deque[tuple[int, object]] = deque(maxlen=keep)
        self._condition = threading.Condition()

    def add(self, stamp_ns: int, frame) -> None:
        with self._condition:
            self._frames.append((stamp_ns, frame))
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._frames.clear()

    @property
    def received(self) -> bool:
        return bool(self._frames)

    def match(self, stamp_ns: int):
        """The frame stamped `stamp_ns`, else the one nearest to it within the slop (the later one on a tie);
        None when none lies within the slop."""
        with self._condition:
            return self._match(stamp_ns)

    def wait_match(self, stamp_ns: int, timeout: float = DEPTH_WAIT_SECONDS):
        """`match`, after waiting up to `timeout` seconds for the exact frame or one at or after `stamp_ns`."""
        with self._condition:
            self._condition.wait_for(lambda: any(stamp >= stamp_ns for stamp, _ in self._frames), timeout)
            return self._match(stamp_ns)

    def _match(self, stamp_ns: int):
        best, best_distance = None, self.slop_ns + 1
        for stamp, frame in self._frames:
            distance = abs(stamp - stamp_ns)
            if distance == 0:
                return frame
            if distance <= best_distance and distance <= self.slop_ns:
                best, best_distance = frame, distance
        return best
