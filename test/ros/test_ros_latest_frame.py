"""The latest-frame slot between the subscription and the inference thread."""
import threading

import pytest

from sparseinst_ros.node import Frame, LatestFrameSlot

pytestmark = pytest.mark.ros


def test_a_newer_frame_replaces_the_pending_one():
    slot = LatestFrameSlot()
    assert slot.put(Frame("first", 0.0)) is False
    assert slot.put(Frame("second", 1.0)) is True          # "first" is dropped
    assert slot.take(timeout=0).msg == "second"
    assert slot.take(timeout=0.01) is None                  # nothing queued behind it


def test_take_waits_for_a_frame_from_another_thread():
    slot = LatestFrameSlot()
    threading.Timer(0.05, slot.put, args=(Frame("late", 0.0),)).start()
    assert slot.take(timeout=5).msg == "late"


def test_close_wakes_the_consumer_and_discards_the_pending_frame():
    slot = LatestFrameSlot()
    slot.put(Frame("pending", 0.0))
    slot.close()
    assert slot.take(timeout=5) is None


def test_clear_discards_the_pending_frame():
    slot = LatestFrameSlot()
    slot.put(Frame("pending", 0.0))
    slot.clear()
    assert slot.take(timeout=0.01) is None
