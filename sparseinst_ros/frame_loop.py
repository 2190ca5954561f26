"""The frame loop between a camera callback and the model: pending frames, a worker thread, statistics.

No ROS here: the node submits messages, the loop hands them to `process` in its own thread and counts
what happened to each frame. Which frames wait is a policy object:
- `LatestFrame` (the node's): at most one pending frame, a newer one replaces it (counted as dropped),
  so a result is never older than one inference plus one frame period;
- `LatestFramePerCamera` (the node's with several cameras): the same, one pending frame per camera, and
  every camera's pending frame goes to `process` in the same cycle (one batch), so no camera waits for
  another;
- `FrameQueue` (the node's with `drop_frames: false`, for replaying recordings): every frame in arrival
  order from a bounded queue; when full the oldest is dropped.
A frame is whatever the caller submits (an image message, or a colour image paired with its depth).
`process` receives the frames of one cycle as a list.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from operator import itemgetter


class LatestFrame:
    """At most one pending frame; a newer frame replaces it and the older one counts as dropped."""

    def __init__(self):
        self._frame = None

    def put(self, frame) -> bool:
        """Make `frame` the pending one; True when it replaced (dropped) an older frame."""
        replaced = self._frame is not None
        self._frame = frame
        return replaced

    def take(self) -> list:
        frame, self._frame = self._frame, None
        return [frame]

    def clear(self) -> None:
        self._frame = None

    def __len__(self) -> int:
        return int(self._frame is not None)


class LatestFramePerCamera:
    """At most one pending frame per camera (`camera_of(frame)`, default: the frame's first item, for
    (camera, message) pairs); a newer frame of a camera replaces that camera's pending frame (dropped), and
    `take` hands over the pending frames of all cameras at once, in the order the cameras first had one."""

    def __init__(self, camera_of: Callable[[object], Hashable] = itemgetter(0)):
        self._camera_of = camera_of
        self._frames: dict = {}                 # camera -> its pending frame

    def put(self, frame) -> bool:
        """Make `frame` its camera's pending one; True when it replaced (dropped) an older frame of that camera."""
        camera = self._camera_of(frame)
        replaced = camera in self._frames
        self._frames[camera] = frame
        return replaced

    def take(self) -> list:
        frames, self._frames = list(self._frames.values()), {}
        return frames

    def clear(self) -> None:
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)


class FrameQueue:
    """Every frame in arrival order, at most `size` pending; a frame arriving at a full queue drops the oldest."""

    def __init__(self, size: int = 30):
        if size < 1:
            raise ValueError(f"queue size must be at least 1, got {size}")
        self.size = size
        self._frames: deque = deque()

    def put(self, frame) -> bool:
        """Queue `frame`; True when the oldest pending frame was dropped to make room."""
        dropped = len(self._frames) == self.size
        if dropped:
            self._frames.popleft()
        self._frames.append(frame)
        return dropped

    def take(self) -> list:
        return [self._frames.popleft()]

    def clear(self) -> None:
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)


PendingFrames = LatestFrame | LatestFramePerCamera | FrameQueue


def pending_frames(drop_frames: bool, queue_size: int, cameras: int = 1) -> PendingFrames:
    """The policy the node's parameters name: the latest frame only (of each of several `cameras`, whose frames
    are (camera, message) pairs), or every frame from a queue of `queue_size` (one frame a cycle, in arrival
    order whatever its camera)."""
    if not drop_frames:
        return FrameQueue(queue_size)
    return LatestFrame() if cameras == 1 else LatestFramePerCamera()


@dataclass(frozen=True)
class ProcessTiming:
    """What `process` reports about one cycle: the model's share of it and, when known, the result's age."""

    inference_ms: float
    age_ms: float | None = None          # input stamp -> result published


@dataclass(frozen=True)
class StatisticsSnapshot:
    """Totals since start-up, and what happened in the period since the previous snapshot."""

    period_s: float
    received: int
    processed: int
    dropped: int
    ignored_paused: int
    lost_in_transport: int
    bad_inputs: dict[str, int]                # cause -> count since start-up
    period_received: int
    period_processed: int
    period_bad: int
    period_lost: int
    input_latency_ms: list[float]             # samples of the period: input stamp -> arrival
    inference_ms: list[float]
    end_to_end_ms: list[float]                # input stamp -> result published
    overhead_ms: list[float]                  # processing time besides the model
    last_received: float | None               # time.monotonic() of the latest arrival
    size_changes: int = 0                     # processed frames whose size differed from the previous one's
    depth_problems: dict[str, int] = field(default_factory=dict)   # cause -> frames without 3D, since start-up
    instances_without_3d: int = 0             # too few valid depth points, since start-up
    period_depth_problems: int = 0

    @property
    def transport_loss_fraction(self) -> float:
        total = self.received + self.lost_in_transport
        return self.lost_in_transport / total if total else 0.0


@dataclass
class _Period:
    start: float
    received: int = 0
    processed: int = 0
    bad: int = 0
    lost: int = 0
    input_latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)


class Statistics:
    """Counters since start-up and samples of the current period; safe to update from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        # received, processed, dropped, ignored_paused, lost_in_transport, size_changes
        self._totals: Counter = Counter()
        self._bad_inputs: Counter = Counter()
        self._depth_problems: Counter = Counter()
        self._period_depth_problems = 0
        self._last_received: float | None = None
        self._period = _Period(clock())

    def count_received(self, input_latency_ms: float | None = None, lost: int = 0) -> None:
        """A frame arrived; `lost` frames of its publisher were skipped before it (sequence gaps)."""
        now = self._clock()
        with self._lock:
            self._totals["received"] += 1
            self._totals["lost_in_transport"] += lost
            self._period.received += 1
            self._period.lost += lost
            self._last_received = now
            if input_latency_ms is not None:
                self._period.input_latency_ms.append(input_latency_ms)

    def count_ignored_paused(self) -> None:
        with self._lock:
            self._totals["ignored_paused"] += 1

    def count_bad_input(self, cause: str) -> int:
        """A frame that could not be used; returns how many frames had this cause so far."""
        with self._lock:
            self._bad_inputs[cause] += 1
            self._period.bad += 1
            return self._bad_inputs[cause]

    def count_size_change(self) -> int:
        """A frame of another size than the previous one (not a bad input); returns how many so far."""
        with self._lock:
            self._totals["size_changes"] += 1
            return self._totals["size_changes"]

    def count_depth_problem(self, cause: str) -> int:
        """A frame that got no 3D (its 2D went out); returns how many frames had this cause so far."""
        with self._lock:
            self._depth_problems[cause] += 1
            self._period_depth_problems += 1
            return self._depth_problems[cause]

    def count_without_3d(self, instances: int) -> None:
        """Instances published in 2D only: too few valid depth points."""
        with self._lock:
            self._totals["instances_without_3d"] += instances

    def count_dropped(self) -> None:
        with self._lock:
            self._totals["dropped"] += 1

    def count_processed(self, frames: int, seconds: float, timing: ProcessTiming | None) -> None:
        with self._lock:
            self._totals["processed"] += frames
            self._period.processed += frames
            if timing is not None:
                self._period.inference_ms.append(timing.inference_ms)
                self._period.overhead_ms.append(seconds * 1e3 - timing.inference_ms)
                if timing.age_ms is not None:
                    self._period.end_to_end_ms.append(timing.age_ms)

    def snapshot(self) -> StatisticsSnapshot:
        """The statistics now; starts a new period."""
        now = self._clock()
        with self._lock:
            period, self._period = self._period, _Period(now)
            period_depth_problems, self._period_depth_problems = self._period_depth_problems, 0
            totals = self._totals
            return StatisticsSnapshot(
                period_s=max(now - period.start, 1e-6), received=totals["received"], processed=totals["processed"],
                dropped=totals["dropped"], ignored_paused=totals["ignored_paused"],
                lost_in_transport=totals["lost_in_transport"], bad_inputs=dict(self._bad_inputs),
                period_received=period.received, period_processed=period.processed, period_bad=period.bad,
                period_lost=period.lost, input_latency_ms=period.input_latency_ms, inference_ms=period.inference_ms,
                end_to_end_ms=period.end_to_end_ms, overhead_ms=period.overhead_ms,
                last_received=self._last_received, size_changes=totals["size_changes"],
                depth_problems=dict(self._depth_problems), instances_without_3d=totals["instances_without_3d"],
                period_depth_problems=period_depth_problems)


class FrameLoop:
    """Runs `process(frames)` in a worker thread on the frames that `submit` leaves pending.

    `process` returns a `ProcessTiming` (or None); an exception it raises goes to `on_error(error)` and the
    loop carries on with the next frame. `pending` is the policy (default `LatestFrame`).
    """

    def __init__(self, process: Callable[[list], ProcessTiming | None], on_error: Callable[[Exception], None],
                 pending: PendingFrames | None = None, statistics: Statistics | None = None,
                 name: str = "frame_loop"):
        self._process = process
        self._on_error = on_error
        self._pending = pending if pending is not None else LatestFrame()
        self.statistics = statistics if statistics is not None else Statistics()
        self._name = name
        self._condition = threading.Condition()
        self._stopped = True
        self._paused = False
        self._worker: threading.Thread | None = None
        self._generation = 0      # a worker that outlived `stop` (a stuck cycle) never takes frames again

    def submit(self, frame) -> bool:
        """Leave `frame` for the worker; True when a pending frame was dropped for it (counted)."""
        with self._condition:
            dropped = self._pending.put(frame)
            self._condition.notify_all()
        if dropped:
            self.statistics.count_dropped()
        return dropped

    def start(self) -> None:
        """Start the worker (on the frames submitted so far)."""
        with self._condition:
            if self._worker is not None:
                raise RuntimeError("the frame loop is already running")
            self._stopped = False
            self._generation += 1
        self._worker = threading.Thread(target=self._run, args=(self._generation,), name=self._name, daemon=True)
        self._worker.start()

    def use_pending(self, pending: PendingFrames) -> None:
        """Change the policy while stopped (a lifecycle node takes the parameters of each activation)."""
        with self._condition:
            if self._worker is not None:
                raise RuntimeError("the pending-frames policy changes only while the frame loop is stopped")
            self._pending = pending

    def stop(self, timeout: float = 30.0) -> None:
        """Discard the pending frames and wait (up to `timeout` s) for the worker to finish its current cycle."""
        with self._condition:
            self._stopped = True
            self._pending.clear()
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def count_arrival(self, input_latency_ms: float | None = None, lost: int = 0) -> bool:
        """Count a frame that arrived (see `Statistics.count_received`); False while paused, when the frame is
        counted as ignored and the caller drops it without looking at it."""
        paused = self._paused
        self.statistics.count_received(input_latency_ms, lost)
        if paused:
            self.statistics.count_ignored_paused()
        return not paused

    def pause(self) -> None:
        """Discard the pending frames; arrivals are ignored until `resume`."""
        with self._condition:
            self._paused = True
            self._pending.clear()

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def snapshot(self) -> StatisticsSnapshot:
        return self.statistics.snapshot()

    def _take(self, generation: int) -> list | None:
        with self._condition:
            self._condition.wait_for(lambda: len(self._pending) or self._stopped)
            return None if self._stopped or generation != self._generation else self._pending.take()

    def _run(self, generation: int) -> None:
        while (frames := self._take(generation)) is not None:
            started = time.monotonic()
            try:
                timing = self._process(frames)
            except Exception as error:   # a failing frame must not stop the loop
                self._on_error(error)
                continue
            self.statistics.count_processed(len(frames), time.monotonic() - started, timing)
