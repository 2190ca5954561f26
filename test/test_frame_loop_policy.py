"""The pending-frames policy the node's parameters name, and changing it between runs of the frame loop (the
lifecycle node takes the parameters of each activation)."""
import threading

import pytest

from sparseinst_ros.frame_loop import FrameLoop, FrameQueue, LatestFrame, pending_frames


def test_drop_frames_names_the_latest_frame_policy_or_a_queue_of_queue_size():
    assert isinstance(pending_frames(drop_frames=True, queue_size=30), LatestFrame)
    queue = pending_frames(drop_frames=False, queue_size=7)
    assert isinstance(queue, FrameQueue) and queue.size == 7


def test_the_policy_changes_only_while_stopped_and_then_applies():
    processed, done = [], threading.Event()

    def process(frames):
        processed.extend(frames)
        if len(processed) == 3:
            done.set()

    loop = FrameLoop(process, lambda error: None)
    loop.use_pending(FrameQueue(size=5))
    for frame in ("a", "b", "c"):
        assert loop.submit(frame) is False          # queued, not replacing each other
    loop.start()
    try:
        assert done.wait(10)
        with pytest.raises(RuntimeError, match="only while the frame loop is stopped"):
            loop.use_pending(LatestFrame())
    finally:
        loop.stop()
    assert processed == ["a", "b", "c"]
    loop.use_pending(LatestFrame())
    loop.submit("d")
    assert loop.submit("e") is True                 # the latest-frame policy again
