"""How the node reports a failure at its boundaries (start-up, lifecycle transitions): one line naming the
parameter or file concerned and the cause, the traceback only at debug log level.

Whatever a step raises (KeyError, TypeError, OSError, torch errors, MemoryError, ...) ends here: a plain
node's start-up would otherwise end in a traceback, and rclpy swallows exceptions raised in lifecycle
transition callbacks without a word.
"""
from __future__ import annotations

import os
import traceback

from rclpy.exceptions import ParameterException

# Exceptions raised with a message written for users (by the library and by this package) are shown as they
# are; any other type is part of the cause ("KeyError: 'model'", "UnicodeDecodeError: 'utf-8' codec ...").
_WORDED_TYPES = (ValueError, FileNotFoundError, RuntimeError)


class StartUpError(RuntimeError):
    """A start-up step failed; the message is the line to report (it names the parameter or file)."""


def describe(error: BaseException) -> str:
    """The cause of `error` in one line."""
    message = " ".join(str(error).split())
    if type(error) in _WORDED_TYPES or isinstance(error, (StartUpError, ParameterException)):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def model_load_failure(error: BaseException, weights: str | os.PathLike, class_names_file: str | None) -> str:
    """Why the model did not load, naming the file concerned: the class names file when reading it failed,
    else the weights (a cause that names the file already is not prefixed again)."""
    cause = describe(error)
    frames = traceback.extract_tb(error.__traceback__)
    if class_names_file and any(frame.name == "load_class_names" for frame in frames):
        name, value = "class_names", str(class_names_file)
    else:
        name, value = "weights", str(weights)
    return cause if value in cause else f"{name} {value!r}: {cause}"


def failure_report(what: str, error: BaseException) -> tuple[str, str]:
    """`<what>: <cause>`, the line to log at error level or above, and the traceback, to log at debug level.
    (The caller logs both: rclpy refuses two severities at one call site.)"""
    return f"{what}: {describe(error)}", "".join(traceback.format_exception(error)).rstrip()
