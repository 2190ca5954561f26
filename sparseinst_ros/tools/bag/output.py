"""A command's output appears only when complete, and Ctrl-C or SIGTERM leave nothing half-written.

`SafeOutput` writes under a temporary name beside the final one (same file system: the last step is one
atomic rename) and removes it on any error; an existing output is refused unless `overwrite`, and replaced
only once the new one is complete. `signals_interrupt` turns SIGINT and SIGTERM into an `Interrupted`
exception, so the same clean-up runs for a signal as for an error.
"""
from __future__ import annotations

import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A signal asked the command to stop; `discarded` names the output that was not written."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.discarded: Path | None = None


@contextmanager
def signals_interrupt():
    """SIGINT and SIGTERM raise `Interrupted` (once: later ones are ignored while the clean-up runs)."""
    def interrupt(signum, _frame):
        for other in SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class SafeOutput:
    """The output path of a command (a bag or a folder), written as `temporary` and renamed when complete.

    Checked at construction: the output may not exist (unless `overwrite`) and its folder must. Use as a
    context manager around the writing; on leaving without an exception the output is put in place.
    """

    def __init__(self, path: Path, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path} exists; pass --overwrite to replace it")
        if not self.path.parent.is_dir():
            raise UsageError(f"the folder of the output, {self.path.parent}, does not exist")
        self._workspace = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"

    @property
    def temporary(self) -> Path:
        """Where to write: a path of the same name inside a hidden folder beside the output."""
        return self._workspace / self.path.name

    def __enter__(self) -> Path:
        self._workspace.mkdir()
        return self.temporary

    def __exit__(self, exc_type, exc, traceback) -> None:
        # A signal now would leave the workspace behind: the few file operations run with signals ignored.
        handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
        try:
            if exc_type is None:
                if self.path.exists():              # --overwrite: the old output goes only now
                    self.path.rename(self._workspace / "replaced")
                self.temporary.rename(self.path)
            elif isinstance(exc, Interrupted):
                exc.discarded = self.path
            shutil.rmtree(self._workspace, ignore_errors=True)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
