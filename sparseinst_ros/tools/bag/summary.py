"""What a command did, counted while it runs and printed at the end: frames, instances per class, time per
stage, and the frames that could not be used (skipped, counted and named)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...conversions import ImageConversionError

SHOWN_FAILURES = 20          # frames named one by one; the rest are counted by cause


@dataclass(frozen=True)
class FailedFrame:
    """A frame that was skipped: its position on the topic, header stamp, cause (a stable key) and message."""

    index: int
    stamp_ns: int | None        # None when the message itself could not be read
    cause: str
    message: str

    def __str__(self) -> str:
        stamp = (f"stamp {self.stamp_ns // 10**9}.{self.stamp_ns % 10**9:09d}" if self.stamp_ns is not None
                 else "no stamp")
        return f"frame {self.index} ({stamp}): [{self.cause}] {self.message}"


@dataclass
class Summary:
    """Counters of one command over one image topic; `done` frames went all the way (processed, exported)."""

    command: str
    topic: str
    done_label: str = "processed"
    read: int = 0
    done: int = 0
    failed: list[FailedFrame] = field(default_factory=list)
    instances: Counter | None = field(default_factory=Counter)   # class name -> instances; None: not inferred
    stage_seconds: Counter = field(default_factory=Counter)      # stage -> seconds over all frames
    elapsed_seconds: float = 0.0
    output: str = ""
    depth_problems: Counter = field(default_factory=Counter)      # cause -> frames that got no 3D

    def count_failure(self, index: int, stamp, error: Exception) -> None:
        cause = error.cause if isinstance(error, ImageConversionError) else "corrupt_message"
        stamp_ns = stamp.sec * 10**9 + stamp.nanosec if stamp is not None else None
        self.failed.append(FailedFrame(index, stamp_ns, cause, str(error)))

    def failure_causes(self) -> Counter:
        return Counter(failure.cause for failure in self.failed)

    def format(self) -> str:
        rate = self.done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        lines = [f"{self.command}: {self.done} of {self.read} frames of {self.topic} {self.done_label} in "
                 f"{self.elapsed_seconds:.1f} s ({rate:.2f} frames/s)" + (f" -> {self.output}" if self.output else "")]
        if self.done and self.instances is not None:
            counts = ", ".join(f"{name} {count}" for name, count in sorted(self.instances.items()))
            lines.append(f"  instances: {counts or 'none'} ({sum(self.instances.values())} in all)")
        if self.stage_seconds and self.read:
            stages = ", ".join(f"{stage} {1e3 * seconds / self.read:.1f} ms"
                               for stage, seconds in self.stage_seconds.items())
            lines.append(f"  time per frame: {stages}")
        if self.depth_problems:
            causes = ", ".join(f"{count} {cause}" for cause, count in sorted(self.depth_problems.items()))
            lines.append(f"  no 3D (2D written): {sum(self.depth_problems.values())} frame(s) ({causes})")
        if self.failed:
            causes = ", ".join(f"{count} {cause}" for cause, count in sorted(self.failure_causes().items()))
            lines.append(f"  failed to decode: {len(self.failed)} frame(s), skipped ({causes}):")
            lines += [f"    {failure}" for failure in self.failed[:SHOWN_FAILURES]]
            if len(self.failed) > SHOWN_FAILURES:
                lines.append(f"    ... and {len(self.failed) - SHOWN_FAILURES} more")
        return "\n".join(lines)
