"""Spin a node until shutdown without tripping over the shutdown itself.

rclpy's signal handler shuts the context down asynchronously. If SIGINT/SIGTERM lands between the loop's
``context.ok()`` check and the executor building its wait set, rclpy raises a bare ``RCLError`` ("the given
context is not valid") instead of ``ExternalShutdownException``. Both mean "we were asked to stop": a node
must exit with status 0, not a traceback.
"""

from __future__ import annotations

from typing import Callable, Optional

from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_until_shutdown(node: Node, done: Optional[Callable[[], bool]] = None, period: float = 0.1) -> None:
    """Run ``node``'s callbacks until the context shuts down (signal) or ``done()`` returns true."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while node.context.ok() and not (done is not None and done()):
            executor.spin_once(timeout_sec=period)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if node.context.ok():
            raise          # a real failure, not the shutdown race
    finally:
        executor.shutdown(timeout_sec=0)
