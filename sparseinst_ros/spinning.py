"""Spin a node until shutdown without tripping over the shutdown itself; `run`: a node process's main.

rclpy's signal handler shuts the context down asynchronously. If SIGINT/SIGTERM lands between the loop's
``context.ok()`` check and the executor building its wait set, rclpy raises a bare ``RCLError`` ("the given
context is not valid") instead of ``ExternalShutdownException``. Both mean "we were asked to stop": a node
must exit with status 0, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from .failures import failure_report


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


def run(node_factory, logger_name: str) -> int:
    """Spin a node until shutdown; start-up errors are logged with their reason and give exit status 1."""
    try:
        rclpy.init(args=sys.argv)                        # parses --ros-args: a malformed one fails here
        node = node_factory()
    except Exception as error:
        line, trace = failure_report("start-up failed", error)
        logger = rclpy.logging.get_logger(logger_name)
        logger.fatal(line)
        logger.debug(trace)
        rclpy.try_shutdown()
        return 1
    try:
        spin_until_shutdown(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
