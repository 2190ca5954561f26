"""Several cameras into one frame loop, without ROS: the latest frame of each camera waits, and every cycle
hands the worker all cameras' pending frames at once, so a fast camera cannot starve a slow one."""
import threading

from sparseinst_ros.frame_loop import FrameLoop, LatestFramePerCamera, pending_frames

WAIT = 10.0


def test_several_cameras_name_the_latest_frame_per_camera_policy():
    assert isinstance(pending_frames(drop_frames=True, queue_size=30, cameras=3), LatestFramePerCamera)


def test_a_newer_frame_replaces_only_its_own_cameras_pending_frame():
    pending = LatestFramePerCamera()
    assert pending.put(("front", 1)) is False
    assert pending.put(("rear", 1)) is False
    assert pending.put(("front", 2)) is True           # front's first frame is dropped, rear's stays
    assert len(pending) == 2
    assert pending.take() == [("front", 2), ("rear", 1)]
    assert len(pending) == 0 and pending.take() == []


def test_the_camera_of_a_frame_can_be_any_key():
    pending = LatestFramePerCamera(camera_of=lambda frame: frame["camera"])
    pending.put({"camera": "left", "seq": 1})
    pending.put({"camera": "left", "seq": 2})
    assert pending.take() == [{"camera": "left", "seq": 2}]


def test_every_cycle_takes_all_cameras_latest_frames_so_no_camera_is_starved():
    cycles, entered, gate, done = [], threading.Event(), threading.Event(), threading.Event()

    def process(frames):
        entered.set()
        assert gate.wait(WAIT)
        cycles.append(frames)
        if len(cycles) == 3:
            done.set()

    loop = FrameLoop(process, lambda error: None, pending=pending_frames(True, 30, cameras=3))
    loop.start()
    try:
        loop.submit(("fast", 0))
        assert entered.wait(WAIT)                        # the worker holds fast 0 inside a cycle
        dropped = [loop.submit(("fast", n)) for n in range(1, 11)]
        loop.submit(("slow", 0))
        loop.submit(("medium", 0))
        loop.submit(("medium", 1))
        gate.set()
        assert _wait_until(lambda: len(cycles) >= 2)
        loop.submit(("slow", 1))
        assert done.wait(WAIT)
    finally:
        loop.stop()
    assert cycles[0] == [("fast", 0)]
    assert cycles[1] == [("fast", 10), ("slow", 0), ("medium", 1)]      # one batch, each camera's latest
    assert cycles[2] == [("slow", 1)]
    assert dropped == [False] + [True] * 9
    stats = loop.snapshot()
    assert (stats.dropped, stats.processed) == (9 + 1, 5)


def _wait_until(predicate, timeout=WAIT):
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        event.wait(0.01)
    return predicate()
