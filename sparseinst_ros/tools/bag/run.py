"""`sparseinst_bag run`: every frame of an image topic through the node's pipeline, the outputs into a new bag.

Frames go one by one, in recording order, through the node's `FrameProcessor` with the node's parameters
(thresholds, class filter, max_instances, publish_overlay, tracking): the decoding, predictor call, label
image, track ids, detections and overlay of a live frame. Its output messages (header: the input's) are written
under the node's topic names, /sparseinst_node/<output>, at the input's bag timestamp; a camera_info recorded beside
the image topic goes out as /sparseinst_node/camera_info, as the node republishes it. Whatever outputs
`FrameProcessor` returns are written, so outputs added to it appear here under their names: with a depth topic,
detections_3d, points and markers (depth paired by stamp as the node pairs it, `depth_slop`). The overlay
(with `publish_overlay`) is drawn with the node's drawing, but in the writer thread: on a CPU it costs about
a quarter of a small model's inference, and drawn there it overlaps the next frame's where a core is free.
A frame that fails to decode is skipped, counted and named in the summary.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from rosbags.rosbag2 import Reader
from tqdm import tqdm

from sparseinst_core.inference import LoadedPredictor

from ...conversions import ImageConversionError, numpy_to_image
from ...detections import InstanceLabels, draw_overlay
from ...frame_processor import decode, processor_from_parameters
from ...parameters import NODE_NAME
from .errors import Failure
from .node_parameters import class_filter
from .output import SafeOutput
from .reading import ImageTopic, RecordedCameraInfo, RecordedDepth, recorded_messages
from .summary import Summary
from .writing import WriterThread

STAGES = ("read", "decode", "inference", "outputs", "write")


def output_topic(name: str) -> str:
    """The node's topic of an output: ~/<name> of sparseinst_node."""
    return f"/{NODE_NAME}/{name}"


def run_recording(reader: Reader, bag: Path, topic: ImageTopic, output: SafeOutput, model: LoadedPredictor,
                  values: dict[str, object], *, storage: str = "mcap", copy_input: bool = False,
                  progress: bool | None = None, depth: tuple[ImageTopic, str] | None = None) -> Summary:
    """Process every frame of `topic` and write the outputs bag at `output`; `progress` None: a progress bar
    on a terminal; `depth`: the depth image topic and its camera_info topic, for the 3D outputs. Raises
    `Failure` when no frame could be decoded (nothing is written then)."""
    camera_info = RecordedCameraInfo.read(reader, topic.camera_info_topic, bag)
    recorded_depth = RecordedDepth(reader, depth[0], RecordedCameraInfo.read(reader, depth[1], bag),
                                   values["depth_slop"], bag) if depth else None
    processor = processor_from_parameters(model, class_filter(values, model), values, every_frame_processed=True)
    overlay = bool(values["publish_overlay"])
    summary = Summary("run", topic.name, output=str(output.path))
    summary.stage_seconds.update(dict.fromkeys(STAGES, 0.0))
    started = time.monotonic()
    with output as path, tqdm(total=topic.count, unit="frame", desc="run", dynamic_ncols=True,
                              disable=None if progress is None else not progress) as bar:
        writer = WriterThread(path, storage)
        try:
            messages = recorded_messages(reader, topic.connections, bag)
            while (recorded := _timed(summary, "read", next, messages, None)) is not None:
                summary.read += 1
                bar.update(1)
                try:
                    msg = _timed(summary, "read", recorded.deserialize, topic.message_type)
                except RuntimeError as error:                 # rclpy cannot deserialise the recorded bytes
                    summary.count_failure(recorded.index, None, error)
                    continue
                infos = [camera_info.match(msg.header, recorded.timestamp)] if camera_info else None
                depths = [recorded_depth.match(msg.header)] if recorded_depth else None
                try:
                    (result,) = processor([msg], infos, depths=depths)
                except ImageConversionError as error:
                    summary.count_failure(recorded.index, msg.header.stamp, error)
                    continue
                for stage in ("decode", "inference", "outputs"):
                    summary.stage_seconds[stage] += result.timings_ms[stage] / 1e3
                frame_outputs = [(output_topic(name), message) for name, message in result.messages.items()]
                if overlay:
                    frame_outputs.append((output_topic("overlay"),
                                          partial(overlay_message, msg, result.instances, model.class_names)))
                writer.put(recorded.timestamp, frame_outputs, [(topic.name, recorded)] if copy_input else [])
                summary.done += 1
                if result.depth_problem is not None:
                    summary.depth_problems[result.depth_problem.cause] += 1
                summary.instances.update(model.class_names[class_id] for class_id in result.instances.class_ids)
            if not summary.done:
                raise Failure(_nothing_decoded(summary))
            writer.finish()
        except BaseException:
            writer.stop()
            raise
        finally:
            summary.stage_seconds["write"] = writer.seconds
    summary.elapsed_seconds = time.monotonic() - started
    return summary


def overlay_message(msg, instances: InstanceLabels, class_names: list[str]):
    """The node's ~/overlay of a frame: its published instances drawn over the decoded image."""
    return numpy_to_image(draw_overlay(decode(msg), instances, class_names), "rgb8", msg.header)


def _timed(summary: Summary, stage: str, function, *args):
    start = time.monotonic()
    try:
        return function(*args)
    finally:
        summary.stage_seconds[stage] += time.monotonic() - start


def _nothing_decoded(summary: Summary) -> str:
    if not summary.read:
        return f"{summary.topic} has no messages"
    causes = ", ".join(f"{count} {cause}" for cause, count in sorted(summary.failure_causes().items()))
    return (f"none of the {summary.read} frames of {summary.topic} could be decoded ({causes}); the first: "
            f"{summary.failed[0]}")
