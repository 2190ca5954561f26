"""Tracking and 3D through the node with the shipped demo model, on generated RGB-D sequences.

    python -m sparseinst_ros.tools.benchmark_node_3d [--sequences 4] [--frames 90] [--json outputs/x.json]

The node's own pipeline (`SparseInstPipeline` on an rclpy node with `depth: true` and its default parameters:
demo weights, tracking on, latest frame wins) runs in this process; its callbacks receive each frame's depth
image, depth camera_info, colour camera_info and colour image as messages, and the output messages its
inference thread hands to the publishers are recorded per stamp (DDS transport is not part of it). Two modes
on the same 30 Hz sequences:

  every_frame   one frame at a time, waiting for its outputs (nothing is dropped);
  own_rate      the frames offered on a 30 Hz wall clock without waiting: the node processes what its
                inference rate allows and drops the rest (its latest-frame loop), as with a live camera.

Each mode's published label images, detection classes and 3D centroids are scored against the ground truth with
`sparseinst_core.tools.benchmark_3d.score_sequence` (motmetrics IDF1, MOTA, id switches; a mode is scored on
the frames the node processed) and the 3D centroid error of the matched instances.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from sparseinst_core.data.rgbd_sequences import RgbdSequence, RgbdSequenceConfig
from sparseinst_core.tools.benchmark_3d import (
    FrameOutput, frame_ground_truth, output_from_label_image, score_sequence, summarise,
)

from ..conversions import image_to_numpy, numpy_to_image
from .processes import product_environment

MODES = ("every_frame", "own_rate")
FRAME_ID = "camera_color_optical_frame"
RESULT_TIMEOUT_S = 120.0          # longest wait for one frame's outputs before the run is declared stuck
_names = itertools.count()


def _stamped(msg, seconds: float):
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(seconds), round((seconds % 1) * 1e9)
    msg.header.frame_id = FRAME_ID
    return msg


def frame_messages(sequence: RgbdSequence) -> list[tuple[float, list, object]]:
    """Per frame: (stamp, [depth camera_info, depth image, colour camera_info], colour image), built before
    any timing so that offering a frame costs no conversion."""
    from sensor_msgs.msg import CameraInfo, Image
    (colour_width, colour_height), (depth_width, depth_height) = sequence.config.colour_size, sequence.config.depth_size
    messages = []
    for frame in sequence:
        depth = Image(height=depth_height, width=depth_width, encoding="16UC1", step=2 * depth_width,
                      data=frame.depth.astype("<u2").tobytes())
        before = [_stamped(CameraInfo(width=depth_width, height=depth_height, k=sequence.depth_k.ravel().tolist()),
                           frame.stamp),
                  _stamped(depth, frame.stamp),
                  _stamped(CameraInfo(width=colour_width, height=colour_height,
                                      k=sequence.colour_k.ravel().tolist()), frame.stamp)]
        messages.append((frame.stamp, before, _stamped(numpy_to_image(frame.colour, "rgb8"), frame.stamp)))
    return messages


class NodeRun:
    """A started node pipeline (depth on, otherwise the node's defaults) whose outputs are recorded by stamp."""

    def __init__(self, device: str):
        from rclpy.node import Node
        from rclpy.parameter import Parameter

        from ..node import SparseInstPipeline
        self.node = Node(f"benchmark_node_3d_{os.getpid()}_{next(_names)}", parameter_overrides=[
            Parameter("device", value=device), Parameter("depth", value=True)])
        self.pipeline = SparseInstPipeline(self.node, self.node.create_publisher, self.node.destroy_publisher)
        self.pipeline.load_model()
        self.pipeline.open_outputs()
        self.pipeline.open_inputs()
        self.camera = self.pipeline.cameras[0]
        self.camera.publish = self._record                  # the inference thread hands each frame's outputs here
        self.outputs: dict[float, dict] = {}

    def _record(self, messages: dict) -> None:
        if "detections" in messages:                        # a frame's outputs (not diagnostics)
            stamp = messages["detections"].header.stamp
            self.outputs[round(stamp.sec + 1e-9 * stamp.nanosec, 6)] = messages

    def offer(self, before: list, colour) -> None:
        """The frame's depth camera_info, depth image and colour camera_info, then its colour image, as the
        node's subscriptions would deliver them."""
        depth_info, depth, colour_info = before
        self.camera.depth.camera_infos.add(depth_info)
        self.camera.depth.on_image(depth)
        self.camera.camera_info.add(colour_info)
        self.pipeline.on_image(colour, None)

    def wait_for(self, stamp: float) -> None:
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while round(stamp, 6) not in self.outputs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no outputs for the frame at {stamp:.3f} s within {RESULT_TIMEOUT_S:g} s")
            time.sleep(0.01)

    def close(self) -> None:
        self.pipeline.close_inputs()
        self.pipeline.close_outputs()
        self.node.destroy_node()


def run_mode(mode: str, messages: list, frame_rate: float, device: str) -> list[FrameOutput]:
    """The node's outputs for the frames it processed, in stamp order."""
    run = NodeRun(device)
    try:
        start = time.monotonic()
        for index, (stamp, before, colour) in enumerate(messages):
            if mode == "own_rate":
                time.sleep(max(0.0, start + index / frame_rate - time.monotonic()))
            run.offer(before, colour)
            if mode == "every_frame":
                run.wait_for(stamp)
        run.wait_for(messages[-1][0])           # latest frame wins: the last one offered is always processed
        recorded = dict(run.outputs)
    finally:
        run.close()
    return [frame_output(stamp, outputs) for stamp, outputs in sorted(recorded.items())]


def frame_output(stamp: float, outputs: dict) -> FrameOutput:
    """One frame's published label image, 2D detection classes and 3D centroids as a `FrameOutput`."""
    class_ids = {int(d.id): int(d.results[0].hypothesis.class_id) for d in outputs["detections"].detections}
    centroids = {}
    if "detections_3d" in outputs:
        for detection in outputs["detections_3d"].detections:
            position = detection.results[0].pose.pose.position
            centroids[int(detection.id)] = np.array([position.x, position.y, position.z])
    return output_from_label_image(stamp, image_to_numpy(outputs["instance_mask"]), class_ids, centroids)


def measure(sequences: list[RgbdSequence], device: str) -> dict:
    """Per mode: frames offered and processed, and the tracking and centroid scores."""
    results = {}
    for mode in MODES:
        scores, offered, processed, start = [], 0, 0, time.monotonic()
        for sequence in sequences:
            messages = frame_messages(sequence)
            outputs = run_mode(mode, messages, sequence.config.frame_rate, device)
            scores.append(score_sequence([frame_ground_truth(frame) for frame in sequence], outputs))
            offered += len(messages)
            processed += len(outputs)
        results[mode] = {"frames_offered": offered, "frames_processed": processed,
                         "seconds_with_model_loads": time.monotonic() - start} | summarise(scores)
    return results


def node_sequences(count: int, seed: int, colour_size: tuple[int, int], **config) -> list[RgbdSequence]:
    """`count` sequences of `colour_size`, alternately with depth at that resolution and at half of it."""
    width, height = colour_size
    return [RgbdSequence(RgbdSequenceConfig(colour_size=colour_size,
                                            depth_size=colour_size if index % 2 == 0 else (width // 2, height // 2),
                                            **config), seed=seed + index) for index in range(count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=4, help="sequences (depth alternately at the colour "
                                                                 "resolution and at half of it)")
    parser.add_argument("--frames", type=int, default=90, help="frames per sequence")
    parser.add_argument("--frame-rate", type=float, default=30.0, help="the sequences' rate and own_rate's clock")
    parser.add_argument("--colour-size", type=int, nargs=2, default=(640, 480), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--classes-repeat", action="store_true",
                        help="4-7 objects whose classes repeat (default: 3-5 objects of distinct classes)")
    parser.add_argument("--seed", type=int, default=1200, help="first sequence seed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    scene = dict(num_objects=(4, 7)) if args.classes_repeat else dict(num_objects=(3, 5), distinct_classes=True)
    sequences = node_sequences(args.sequences, args.seed, tuple(args.colour_size), num_frames=args.frames,
                               frame_rate=args.frame_rate, **scene)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
               "command": "python -m sparseinst_ros.tools.benchmark_node_3d", "arguments": {
                   key: value for key, value in vars(args).items() if key != "json"},
               "scene": scene}
    import rclpy
    owns_ros = not rclpy.ok()
    if owns_ros:
        os.environ.update(product_environment(own_domain=True))
        rclpy.init()
    try:
        results |= measure(sequences, args.device)
    finally:
        if owns_ros:
            rclpy.try_shutdown()
    results["machine"] += f" (at the end: {os.getloadavg()[0]:.1f})"
    for mode in MODES:
        print(f"{mode}:", flush=True)
        for key, value in results[mode].items():
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
