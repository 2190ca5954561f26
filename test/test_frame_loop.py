"""The frame loop between the camera callback and the model, through its public API and without ROS: which
frames wait, what reaches `process` in which order, what is counted, and how it starts, pauses and stops."""
import subprocess
import sys
import threading
import time

import pytest

from sparseinst_ros.frame_loop import FrameLoop, FrameQueue, ProcessTiming, Statistics

WAIT = 10.0      # seconds a test waits for the worker thread before failing


class Recorder:
    """A `process` callable that records the frames of each cycle; `gate` holds the worker inside a cycle."""

    def __init__(self, cycles_expected: int = 1, fail_on=()):
        self.cycles: list[list] = []
        self.errors: list[Exception] = []
        self.failed = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = set(fail_on)
        self._expected = cycles_expected
        self.done = threading.Event()

    def process(self, frames):
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.cycles.append(list(frames))
        if len(self.cycles) >= self._expected:
            self.done.set()
        if self.fail_on & set(frames):
            raise ValueError(f"cannot process {frames}")
        return ProcessTiming(inference_ms=1.0, age_ms=2.0)

    def on_error(self, error):
        self.errors.append(error)
        self.failed.set()


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def loop(recorder):
    loop = FrameLoop(recorder.process, recorder.on_error)
    yield loop
    recorder.gate.set()
    loop.stop()


def test_a_newer_frame_replaces_the_pending_one(loop, recorder):
    assert loop.submit("first") is False
    assert loop.submit("second") is True                   # "first" is dropped
    loop.start()
    assert recorder.done.wait(WAIT)
    loop.stop()
    assert recorder.cycles == [["second"]]                 # nothing queued behind it
    stats = loop.snapshot()
    assert (stats.processed, stats.dropped) == (1, 1)


def test_the_worker_waits_for_a_frame_from_another_thread(loop, recorder):
    loop.start()
    threading.Timer(0.05, loop.submit, args=("late",)).start()
    assert recorder.done.wait(WAIT)
    assert recorder.cycles == [["late"]]


def test_frames_arriving_while_busy_leave_only_the_newest_pending():
    recorder = Recorder(cycles_expected=2)
    loop = FrameLoop(recorder.process, recorder.on_error)
    recorder.gate.clear()
    loop.start()
    try:
        loop.submit(0)
        assert recorder.entered.wait(WAIT)                 # the worker is busy with frame 0
        dropped = [loop.submit(frame) for frame in range(1, 6)]
        recorder.gate.set()
        assert recorder.done.wait(WAIT)
    finally:
        loop.stop()
    assert dropped == [False, True, True, True, True]
    assert recorder.cycles == [[0], [5]]
    stats = loop.snapshot()
    assert (stats.processed, stats.dropped) == (2, 4)


def test_stop_discards_the_pending_frame_and_lets_the_current_one_finish(loop, recorder):
    recorder.gate.clear()
    loop.start()
    loop.submit("current")
    assert recorder.entered.wait(WAIT)
    loop.submit("pending")
    threading.Timer(0.1, recorder.gate.set).start()
    loop.stop()                                            # returns once "current" is done
    assert recorder.cycles == [["current"]]
    assert loop.snapshot().processed == 1


def test_a_stopped_loop_starts_again_and_keeps_counting():
    recorder = Recorder(cycles_expected=2)
    loop = FrameLoop(recorder.process, recorder.on_error)
    loop.start()
    loop.submit("before")
    assert recorder.entered.wait(WAIT)
    loop.stop()                                            # "before" is finished first
    loop.start()
    loop.submit("after")
    try:
        assert recorder.done.wait(WAIT)
    finally:
        loop.stop()
    assert recorder.cycles == [["before"], ["after"]]
    assert loop.snapshot().processed == 2


def test_a_worker_stuck_past_stop_takes_no_frame_after_a_restart():
    stuck, seen = threading.Event(), []
    entered = threading.Event()

    def process(frames):
        seen.append((frames[0], threading.current_thread()))
        if frames[0] == "stuck":
            entered.set()
            assert stuck.wait(WAIT)

    loop = FrameLoop(process, on_error=print)
    loop.start()
    loop.submit("stuck")
    assert entered.wait(WAIT)
    loop.stop(timeout=0.05)                                # gives up waiting: the worker is still inside
    loop.start()
    stuck.set()                                            # the old worker finishes its cycle now
    for frame in ("a", "b", "c"):
        loop.submit(frame)
        deadline = time.monotonic() + WAIT
        while frame not in [f for f, _ in seen] and time.monotonic() < deadline:
            time.sleep(0.01)
    loop.stop()
    old_worker = seen[0][1]
    assert [f for f, _ in seen] == ["stuck", "a", "b", "c"]
    assert all(worker is not old_worker for _, worker in seen[1:])


def test_start_twice_is_an_error(loop):
    loop.start()
    with pytest.raises(RuntimeError, match="already running"):
        loop.start()


def test_pause_discards_the_pending_frame_and_ignores_arrivals_until_resumed(loop, recorder):
    loop.submit("pending")
    loop.pause()
    assert loop.paused
    assert loop.count_arrival() is False                   # the caller drops this frame
    loop.resume()
    assert loop.count_arrival() is True
    loop.submit("after")
    loop.start()
    assert recorder.done.wait(WAIT)
    assert recorder.cycles == [["after"]]
    stats = loop.snapshot()
    assert (stats.received, stats.ignored_paused) == (2, 1)


def test_a_failing_frame_goes_to_on_error_and_the_loop_carries_on():
    recorder = Recorder(cycles_expected=2, fail_on={"bad"})
    loop = FrameLoop(recorder.process, recorder.on_error)
    loop.start()
    try:
        loop.submit("bad")
        assert recorder.failed.wait(WAIT)
        loop.submit("good")
        assert recorder.done.wait(WAIT)
    finally:
        loop.stop()
    assert [str(e) for e in recorder.errors] == ["cannot process ['bad']"]
    assert loop.snapshot().processed == 1                  # only the frame that went through


def test_the_queue_policy_processes_every_frame_in_order_and_drops_the_oldest_when_full():
    recorder = Recorder(cycles_expected=3)
    loop = FrameLoop(recorder.process, recorder.on_error, pending=FrameQueue(size=3))
    dropped = [loop.submit(frame) for frame in range(1, 6)]
    assert dropped == [False, False, False, True, True]    # 1 and 2 made room for 4 and 5
    loop.start()
    try:
        assert recorder.done.wait(WAIT)
    finally:
        loop.stop()
    assert recorder.cycles == [[3], [4], [5]]
    assert loop.snapshot().dropped == 2


def test_a_queue_holds_at_least_one_frame():
    with pytest.raises(ValueError, match="at least 1"):
        FrameQueue(size=0)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_statistics_keep_totals_and_start_a_new_period_at_each_snapshot():
    clock = FakeClock()
    stats = Statistics(clock)
    stats.count_received(input_latency_ms=3.0)
    stats.count_received(input_latency_ms=None, lost=4)    # 4 frames of its publisher never arrived
    assert [stats.count_bad_input("bad_step") for _ in range(2)] == [1, 2]
    stats.count_processed(1, seconds=0.015, timing=ProcessTiming(inference_ms=10.0, age_ms=25.0))
    stats.count_processed(1, seconds=0.001, timing=None)
    clock.now = 102.0
    first = stats.snapshot()
    assert first.period_s == 2.0 and first.last_received == 100.0
    assert (first.received, first.processed, first.lost_in_transport) == (2, 2, 4)
    assert (first.period_received, first.period_processed, first.period_bad, first.period_lost) == (2, 2, 2, 4)
    assert first.input_latency_ms == [3.0] and first.inference_ms == [10.0] and first.end_to_end_ms == [25.0]
    assert first.overhead_ms == [pytest.approx(5.0)]      # the cycle's time besides the model
    assert first.bad_inputs == {"bad_step": 2}
    assert first.transport_loss_fraction == pytest.approx(4 / 6)

    clock.now = 103.0
    second = stats.snapshot()                              # nothing happened in this period
    assert second.period_s == 1.0
    assert (second.period_received, second.period_processed, second.period_bad, second.period_lost) == (0, 0, 0, 0)
    assert second.inference_ms == [] and second.input_latency_ms == []
    assert (second.received, second.processed, second.bad_inputs) == (2, 2, {"bad_step": 2})


def test_the_frame_loop_needs_no_ros():
    code = ("import sys, sparseinst_ros.frame_loop; "
            "ros = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'sparseinst_core')); "
            "sys.exit(f'imported {ros}' if ros else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
