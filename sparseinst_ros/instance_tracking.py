"""Track ids for the node's detections: one `sparseinst_core.scene.MaskTracker` per camera stream.

The node's parameters count in frames of the camera (`track_max_age`: frames unseen), the tracker in
seconds. The camera's frame interval is measured from the stamps of every *arriving* frame (the median of
the recent intervals), not of the processed ones: the latest-frame loop skips frames when inference is
slower than the camera, and counting processed frames would shorten a track's life by the skipping factor.
Tentative tracks must survive until the next *processed* frame, so their age limit is the tracker's default
or 1.5 processed intervals, whichever is longer (at most the confirmed tracks' limit).

ROS-free: stamps are seconds; the caller names the stream (the node: the image's frame_id).
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from sparseinst_core.inference.label_image import InstanceLabels
from sparseinst_core.scene import InstanceMask, MaskTracker, Observation, TrackerConfig

ASSUMED_FRAME_INTERVAL = 1 / 30     # seconds, until two frames of a stream have arrived
TENTATIVE_INTERVALS = 1.5           # processed intervals a tentative track waits for its next observation
RECENT_INTERVALS = 30


def instance_masks(instances: InstanceLabels) -> list[InstanceMask]:
    """Each instance's mask, in the order of `instances.ids`: the label image inside the instance's box (measured
    when the label image was made), so no pass over the whole image."""
    label_image = instances.label_image
    return [InstanceMask(label_image[y0:y1 + 1, x0:x1 + 1] == instance_id, x0, y0)
            for instance_id, (x0, y0, x1, y1) in zip(instances.ids.tolist(), instances.boxes.tolist())]


class FrameInterval:
    """The median of the last few positive intervals between the stamps given; thread-safe (frames arrive in
    the executor's thread, the tracker reads the interval in the inference thread)."""

    def __init__(self, keep: int = RECENT_INTERVALS):
        self._lock = threading.Lock()
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=keep)

    def observe(self, stamp: float) -> None:
        """A frame stamped `stamp`; an earlier stamp than the last (a recording restarting) starts over."""
        with self._lock:
            if self._last is not None and stamp < self._last:
                self._intervals.clear()
            elif self._last is not None and stamp > self._last:
                self._intervals.append(stamp - self._last)
            self._last = stamp

    def seconds(self) -> float | None:
        """The median interval; None before two distinct stamps."""
        with self._lock:
            return statistics.median(self._intervals) if self._intervals else None


@dataclass(frozen=True)
class TrackingSettings:
    """The node's tracking parameters: births after `track_min_hits` observations, survival through
    `track_max_age` frames of the camera unseen."""

    track_min_hits: int = 3
    track_max_age: int = 30


class StreamTracker:
    """The tracker of one camera stream and the frame intervals that set its time limits."""

    def __init__(self, settings: TrackingSettings):
        self.settings = settings
        self.arrivals = FrameInterval()
        self.processed = FrameInterval()
        self.tracker = MaskTracker(TrackerConfig(track_min_hits=settings.track_min_hits))

    def config(self) -> TrackerConfig:
        """The tracker's configuration for the intervals measured so far."""
        camera_interval = self.arrivals.seconds() or ASSUMED_FRAME_INTERVAL
        max_age = self.settings.track_max_age * camera_interval
        processed_interval = self.processed.seconds() or camera_interval
        tentative = min(max(TrackerConfig.tentative_max_age, TENTATIVE_INTERVALS * processed_interval), max_age)
        current = self.tracker.config
        if (current.track_max_age, current.tentative_max_age) == (max_age, tentative):
            return current
        return replace(current, track_max_age=max_age, tentative_max_age=tentative)

    def assign(self, stamp: float, instances: InstanceLabels, masks: list[InstanceMask] | None = None,
               centroids: list[np.ndarray | None] | None = None) -> tuple[InstanceLabels, np.ndarray]:
        """`instances` relabelled with track ids (label image through a lookup table, pixel value == id) and
        (N,) bool: confirmed tracks. `masks[i]`: instance i's mask (else read from the label image);
        `centroids[i]`: its 3D centroid when depth gave one."""
        self.processed.observe(stamp)
        self.tracker.config = self.config()
        if masks is None:
            masks = instance_masks(instances)
        centroids = centroids or [None] * len(instances)
        observations = [Observation(int(class_id), float(score), mask, centroid)
                        for mask, class_id, score, centroid in zip(masks, instances.class_ids, instances.scores,
                                                                   centroids)]
        tracked = self.tracker.update(stamp, observations)
        return instances.with_ids(tracked.ids), tracked.confirmed


class InstanceTracking:
    """Track ids for several camera streams, each with its own tracker (created at its first frame).

    `arrived(stream, stamp)` is called for every frame that reaches the node, processed or not; when the
    caller processes every frame (a recording), `every_frame_processed` lets `assign` count them itself.
    """

    def __init__(self, settings: TrackingSettings, every_frame_processed: bool = True):
        self.settings = settings
        self.every_frame_processed = every_frame_processed
        self._streams: dict[str, StreamTracker] = {}
        self._lock = threading.Lock()

    def stream(self, name: str) -> StreamTracker:
        with self._lock:
            if name not in self._streams:
                self._streams[name] = StreamTracker(self.settings)
            return self._streams[name]

    def arrived(self, stream: str, stamp: float) -> None:
        self.stream(stream).arrivals.observe(stamp)

    def assign(self, stream: str, stamp: float, instances: InstanceLabels, masks: list[InstanceMask] | None = None,
               centroids: list[np.ndarray | None] | None = None) -> tuple[InstanceLabels, np.ndarray]:
        """See `StreamTracker.assign`."""
        tracker = self.stream(stream)
        if self.every_frame_processed:
            tracker.arrivals.observe(stamp)
        return tracker.assign(stamp, instances, masks, centroids)
