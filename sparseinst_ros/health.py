"""Is the node doing its job, and if not, why? The /diagnostics status and the troubleshooting hints.

`diagnostic_status` turns a statistics snapshot (`frame_loop.StatisticsSnapshot`) into a
DiagnosticStatus. `Troubleshooting` decides which hints to log about the input: bad frames (throttled per
cause), an image topic that has publishers but delivers nothing, images lost before reaching the node,
large images under a lossy transport, a camera_info published somewhere other than beside the image, and
images that change size (`SizeChanges` notices them). The hints read the ROS graph through a `Graph`
(`NodeGraph` for a node), so the decisions can be checked with plain data.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.qos import ReliabilityPolicy

from .camera_info import camera_info_topic
from .frame_loop import StatisticsSnapshot
from .transport import LARGE_SAMPLE_BYTES, TRANSPORT_ADVICE, lossy_fastdds_configuration

LOG_REPEAT_SECONDS = 10.0


def _median(values) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def diagnostic_status(stats: StatisticsSnapshot, *, name: str, image_topic: str, enabled: bool, input_silent: bool,
                      device: str = "", precision: str = "", model: str = "",
                      cameras: dict[str, str] | None = None, silent_topics: str = "") -> DiagnosticStatus:
    """The node's status for one period: OK, or WARN with the most pressing reason, and every figure as a key;
    `cameras`: each camera's figures, keyed `camera <image topic>: ...` (several cameras); `silent_topics`: the
    silent ones among several image topics (default: `image_topic`)."""
    period = stats.period_s
    level, message = DiagnosticStatus.OK, "running"
    if not enabled:
        message = "paused (~/enable)"
    elif stats.period_bad:
        level, message = DiagnosticStatus.WARN, f"{stats.period_bad} bad input frame(s) in the last {period:.1f} s"
    elif stats.period_lost:
        level, message = DiagnosticStatus.WARN, (f"{stats.period_lost} frame(s) lost before reaching the node in the "
                                                 f"last {period:.1f} s")
    elif input_silent:
        level, message = DiagnosticStatus.WARN, f"no images received on {silent_topics or image_topic}"
    elif stats.period_depth_problems:
        level, message = DiagnosticStatus.WARN, (f"{stats.period_depth_problems} frame(s) without 3D (depth "
                                                 f"problem) in the last {period:.1f} s")
    values = {
        "input rate (Hz)": f"{stats.period_received / period:.2f}",
        "output rate (Hz)": f"{stats.period_processed / period:.2f}",
        "input latency median (ms)": f"{_median(stats.input_latency_ms):.2f}",
        "inference latency median (ms)": f"{_median(stats.inference_ms):.2f}",
        "inference latency max (ms)": f"{max(stats.inference_ms, default=float('nan')):.2f}",
        "end-to-end latency median (ms)": f"{_median(stats.end_to_end_ms):.2f}",
        "node overhead median (ms)": f"{_median(stats.overhead_ms):.2f}",
        "frames received": str(stats.received),
        "frames processed": str(stats.processed),
        "frames dropped": str(stats.dropped),
        "frames lost in transport": str(stats.lost_in_transport),
        "transport loss (%)": f"{100 * stats.transport_loss_fraction:.2f}",
        "frames ignored while paused": str(stats.ignored_paused),
        "bad input frames": str(sum(stats.bad_inputs.values())),
        **{f"bad input: {cause}": str(count) for cause, count in sorted(stats.bad_inputs.items())},
        "image size changes": str(stats.size_changes),
        **{f"depth problem: {cause}": str(count) for cause, count in sorted(stats.depth_problems.items())},
        "instances without 3D": str(stats.instances_without_3d),
        "enabled": str(enabled).lower(),
        "device": device,
        "precision": precision,
        "model": model,
        "image topic": image_topic,
        **(cameras or {}),
    }
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=device,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


class SizeChanges:
    """Remembers the size of the processed images: a change is worth saying (not an error), because consumers of
    the outputs (a label image beside camera_info) may assume one size."""

    def __init__(self):
        self._last: tuple[int, int] | None = None

    def check(self, height: int, width: int) -> str | None:
        """Why an image of this size is a change; None for the first image and for the same size."""
        previous, self._last = self._last, (height, width)
        if previous is None or previous == (height, width):
            return None
        return f"image size changed from {previous[1]}x{previous[0]} to {width}x{height}; outputs follow the new size"


class Graph(Protocol):
    """What the hints need to know about the ROS graph."""

    def publisher_reliabilities(self, topic: str) -> list[ReliabilityPolicy]:
        """The QoS reliability of each publisher of `topic`."""

    def camera_info_topics(self) -> list[str]:
        """Topics of type sensor_msgs/CameraInfo, except the node's own outputs."""


class NodeGraph:
    """`Graph` of a running rclpy node."""

    def __init__(self, node):
        self.node = node

    def publisher_reliabilities(self, topic: str) -> list[ReliabilityPolicy]:
        return [p.qos_profile.reliability for p in self.node.get_publishers_info_by_topic(topic)]

    def camera_info_topics(self) -> list[str]:
        own = self.node.get_fully_qualified_name() + "/"
        return [name for name, types in self.node.get_topic_names_and_types()
                if "sensor_msgs/msg/CameraInfo" in types and not name.startswith(own)]


class Troubleshooting:
    """The input hints of one node, each logged when it first applies (repeats throttled or suppressed).

    `open` starts watching the image topics (one per camera); the node calls `frame_received` and `bad_input`
    from its image callback and `review` with each diagnostics period's snapshot. A silent topic is watched
    per camera, so one dead camera among several is said, and so is the camera_info beside each topic.
    """

    def __init__(self, logger, graph: Graph, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.graph = graph
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self.image_topics: list[str] = []
        self._input_qos = ""
        self._input_timeout = 0.0
        self._opened = clock()
        self.silent_topics: set[str] = set()    # warned about: silent topics that have publishers
        self._large_images_checked = False
        self._last_sample_bytes = 0
        self._camera_info_checked: set[str] = set()   # image topics whose camera_info was looked for
        self._depth_causes_said: set[str] = set()

    def open(self, image_topics: str | list[str], input_qos: str, input_timeout: float) -> None:
        self.image_topics = [image_topics] if isinstance(image_topics, str) else list(image_topics)
        self._input_qos, self._input_timeout = input_qos, input_timeout
        self._opened = self._clock()
        self.silent_topics = set()

    @property
    def image_topic(self) -> str:
        """The watched image topic(s), comma-separated."""
        return ", ".join(self.image_topics)

    @property
    def input_silent(self) -> bool:
        return bool(self.silent_topics)

    @property
    def silent_text(self) -> str:
        return ", ".join(topic for topic in self.image_topics if topic in self.silent_topics)

    def throttled(self, cause: str, message: str, count: int) -> str | None:
        """`message` the first time `cause` occurs, then at most every LOG_REPEAT_SECONDS (with `count`, the
        occurrences so far); None when it is not to be logged now."""
        now = self._clock()
        last = self._last_logged.get(cause)
        if last is not None and now - last < LOG_REPEAT_SECONDS:
            return None
        self._last_logged[cause] = now
        return message + (f" ({count} so far; repeats are logged every {LOG_REPEAT_SECONDS:.0f} s)" if last else "")

    # (one call site per severity: rclpy refuses a second severity at the same call site)
    def warn_throttled(self, cause: str, message: str, count: int) -> None:
        """Log `message` the first time `cause` occurs, then at most every LOG_REPEAT_SECONDS."""
        if text := self.throttled(cause, message, count):
            self.logger.warning(text)

    def bad_input(self, cause: str, message: str, count: int) -> None:
        """A frame was skipped: `count` frames so far had this cause."""
        self.warn_throttled(cause, f"skipped a frame [{cause}]: {message}", count)

    def depth_problem(self, cause: str, message: str) -> None:
        """A frame got no 3D (its 2D was published): said once per cause (/diagnostics counts them)."""
        if cause not in self._depth_causes_said:
            self._depth_causes_said.add(cause)
            self.logger.warning(f"no 3D for a frame [{cause}]: {message} (said once; /diagnostics counts "
                                f"'depth problem: {cause}')")

    def size_changed(self, message: str, count: int) -> None:
        """The image size changed (`count` times so far); the frame was processed: said at info level."""
        if text := self.throttled("size_changed", message, count):
            self.logger.info(text)

    def frame_received(self, sample_bytes: int) -> None:
        """The first large image under a transport that loses large images between processes is pointed out."""
        self._last_sample_bytes = sample_bytes
        if self._large_images_checked or sample_bytes <= LARGE_SAMPLE_BYTES:
            return
        self._large_images_checked = True
        problem = lossy_fastdds_configuration()
        if problem:
            self.logger.warning(f"receiving {sample_bytes / 1e6:.1f} MB images on {self.image_topic}, but {problem}: "
                                f"{TRANSPORT_ADVICE}")

    def review(self, stats: StatisticsSnapshot, camera_info_received: bool | Mapping[str, bool],
               last_received: Mapping[str, float | None] | None = None) -> None:
        """The hints that one diagnostics period calls for. `camera_info_received`: whether a camera_info came
        beside the image topic, or by image topic for the cameras whose frames were processed; `last_received`:
        the latest arrival on each image topic (default: the snapshot's latest arrival, for one topic)."""
        if last_received is None:
            last_received = dict.fromkeys(self.image_topics, stats.last_received)
        for topic, last in last_received.items():
            self._check_input_silence(topic, last)
        if stats.period_lost:
            self._warn_transport_loss(stats.period_lost, stats.period_received, stats.lost_in_transport)
        if isinstance(camera_info_received, bool):
            camera_info_received = {self.image_topics[0]: camera_info_received}
        for topic, received in camera_info_received.items():
            self._check_camera_info(topic, stats.period_processed, received)

    def _check_input_silence(self, topic: str, last_received: float | None) -> None:
        """Warn once per silence when an image topic has publishers but nothing arrives."""
        since = self._clock() - (last_received if last_received is not None else self._opened)
        if since < self._input_timeout:
            self.silent_topics.discard(topic)
            return
        if topic in self.silent_topics:
            return
        reliabilities = self.graph.publisher_reliabilities(topic)
        if not reliabilities:
            return
        self.silent_topics.add(topic)
        hints = []
        if self._input_qos == "reliable" and ReliabilityPolicy.BEST_EFFORT in reliabilities:
            hints.append("a publisher is best effort while input_qos is 'reliable': set input_qos to 'sensor_data'")
        problem = lossy_fastdds_configuration()
        if problem:
            hints.append(f"{problem}: {TRANSPORT_ADVICE}")
        self.logger.warning(f"no image received on {topic} for {since:.0f} s although "
                            f"{len(reliabilities)} publisher(s) exist" + (": " + "; ".join(hints) if hints else ""))

    def _warn_transport_loss(self, lost: int, received: int, lost_total: int) -> None:
        """Frames were published to the image topic but never arrived (gaps in publisher sequence numbers)."""
        hint = TRANSPORT_ADVICE if self._last_sample_bytes > LARGE_SAMPLE_BYTES else (
            "check the network and the publisher's QoS")
        self.warn_throttled("transport_loss", f"{lost} of {lost + received} image(s) published on {self.image_topic} "
                            f"in the last period were lost before reaching this node: {hint}", lost_total)

    def _check_camera_info(self, topic: str, processed: int, camera_info_received: bool) -> None:
        """Once images flow: say so when no camera_info arrives beside an image topic but one is published
        elsewhere (once per topic)."""
        if topic in self._camera_info_checked or processed == 0 or camera_info_received:
            return
        self._camera_info_checked.add(topic)
        expected = camera_info_topic(topic.removesuffix("/compressed"))
        if self.graph.publisher_reliabilities(expected):
            return   # published, just not yet received
        siblings = {camera_info_topic(image_topic.removesuffix("/compressed")) for image_topic in self.image_topics}
        elsewhere = sorted(name for name in self.graph.camera_info_topics() if name not in siblings)   # not a camera's own
        if elsewhere:
            self.logger.warning(f"no camera_info on {expected} (looked up beside the image topic); CameraInfo is "
                                f"published on {', '.join(elsewhere)}: remap the image topic so that its camera_info "
                                f"is its sibling, or the camera's camera_info to {expected}")
