"""A node asked to stop exits cleanly, even when the stop lands while the executor builds its wait set."""
import pytest
import rclpy
from rclpy.context import Context

from sparseinst_ros.spinning import spin_until_shutdown

pytestmark = pytest.mark.ros


def test_shutdown_between_the_ok_check_and_the_wait_is_a_clean_stop():
    # `done` runs after the loop's context.ok() check and before spin_once: shutting down there reproduces the
    # signal-handler race that made the image source exit with RCLError ("the given context is not valid").
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("spinning_race", context=context)
    calls = []

    def shut_down_now():
        calls.append(1)
        rclpy.shutdown(context=context)
        return False

    spin_until_shutdown(node, done=shut_down_now)
    assert calls == [1] and not context.ok()
    node.destroy_node()


def test_done_ends_the_spin_and_keeps_the_context():
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("spinning_done", context=context)
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(1))
    spin_until_shutdown(node, done=lambda: len(ticks) >= 3, period=0.05)
    assert len(ticks) >= 3 and context.ok()
    node.destroy_node()
    rclpy.shutdown(context=context)
