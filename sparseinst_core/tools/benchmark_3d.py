"""Benchmark of per-instance 3D and tracking on generated RGB-D sequences (`data.rgbd_sequences`).

    python -m sparseinst_core.tools.benchmark_3d [--json outputs/benchmark_3d.json]

Prints measured numbers for:

(a) the tracker alone, fed the ground-truth instances with 10% dropped at random, jittered masks (dilated,
    eroded or shifted by 1-3 px) and skipped frames (irregular stamps, 7.5-30 Hz), with and without the 3D
    centroids that the geometry computes on those masks: IDF1, MOTA, id switches per 20 ground-truth tracks;
(b) the 3D centroid error of the geometry on ground-truth masks with the generated noisy depth, objects at
    0.5-4 m: median and 95th percentile, by depth;
(c) the shipped demo model on every frame of generated sequences, through what the node publishes (the label
    image: higher score wins overlaps), the geometry and the tracker: IDF1, MOTA, id switches, detection
    recall and precision, 3D centroid error of the matched instances;
(d) the per-frame cost of 3D (depth conversion included) and tracking at 640x480 with 20 instances.

Tracking is scored by motmetrics on masks: a hypothesis matches a ground-truth object at mask IoU >= 0.5.
Objects less than 20% visible are "don't care" (not counted as misses; a hypothesis on them is not a false
positive), as MOT benchmarks do with heavily occluded people. Sequences alternate colour-resolution and
half-resolution depth. `score_sequence` scores any per-frame outputs (for instance recorded from the node,
with `output_from_label_image`) against a sequence's ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import motmetrics
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.rgbd_sequences import GroundTruthObject, RgbdSequence, RgbdSequenceConfig
from ..inference import DEMO_WEIGHTS, load_predictor
from ..inference.label_image import label_instances
from ..scene import (
    FrameGeometry, GeometryOptions, InstanceMask, MaskTracker, Observation, PinholeCamera, TrackerConfig,
    depth_to_metres, instances_3d, mask_iou, masks_from_label_image,
)

MATCH_IOU = 0.5                 # a hypothesis matches a ground-truth object from this mask IoU
MIN_VISIBLE_FRACTION = 0.2      # less visible ground-truth objects are "don't care"
DROP_FRACTION = 0.1             # (a): ground-truth instances left out at random
JITTER_PX = 3                   # (a): largest dilation, erosion or shift of a mask
FRAME_STEPS = (1, 2, 3, 4)      # (a): frames skipped between processed ones (of a 30 Hz sequence) ...
FRAME_STEP_PROBABILITIES = (0.4, 0.3, 0.2, 0.1)   # ... with these probabilities
DEPTH_BINS = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class OutputInstance:
    """One published instance: its id, class, mask (colour pixels), 3D centroid (metres) if any, and whether
    its track is confirmed."""

    track_id: int
    class_id: int
    mask: InstanceMask
    centroid: np.ndarray | None = None
    confirmed: bool = True


@dataclass(frozen=True)
class FrameOutput:
    stamp: float
    instances: list[OutputInstance]


@dataclass(frozen=True)
class _GroundTruthFrame:
    stamp: float
    objects: list[GroundTruthObject]


@dataclass
class SequenceScore:
    """motmetrics' events of one sequence, and the 3D centroid errors (metres) of the matched instances."""

    accumulator: motmetrics.MOTAccumulator
    centroid_errors: list[float]
    centroid_depths: list[float]   # ground-truth depth of each error's object
    matched_without_3d: int
    frames: int


def output_from_label_image(stamp: float, label_image: np.ndarray, class_ids: dict[int, int],
                            centroids: dict[int, np.ndarray] | None = None) -> FrameOutput:
    """The node's outputs of one frame (mono16 label image, detection id -> class and -> 3D centroid) as a
    `FrameOutput`."""
    centroids = centroids or {}
    return FrameOutput(stamp, [OutputInstance(track_id, class_ids[track_id], mask, centroids.get(track_id))
                               for track_id, mask in masks_from_label_image(label_image).items()])


def score_sequence(ground_truth: Sequence, outputs: Sequence[FrameOutput]) -> SequenceScore:
    """Score `outputs` against the ground truth of the frames with the same stamps.

    ground_truth: frames with `.stamp` and `.objects` (list of `GroundTruthObject`), e.g. `RgbdFrame`s. Frames
    without an output are not scored (a node that skips frames is scored on those it processed).
    """
    by_stamp = {round(frame.stamp, 4): frame.objects for frame in ground_truth}
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    errors, depths, without_3d = [], [], 0
    for index, output in enumerate(outputs):
        objects = by_stamp[round(output.stamp, 4)]
        masks = [InstanceMask(o.mask, *o.mask_offset) for o in objects]
        iou = np.array([[mask_iou(m, h.mask) for h in output.instances] for m in masks]).reshape(
            len(objects), len(output.instances))                                     # (G, H)
        counted = np.array([o.visible_fraction >= MIN_VISIBLE_FRACTION for o in objects], bool)
        on_ignored = (iou[~counted] >= MATCH_IOU).any(axis=0) & ~(iou[counted] >= MATCH_IOU).any(axis=0)
        iou, kept_objects = iou[counted][:, ~on_ignored], [o for o, c in zip(objects, counted) if c]
        hypotheses = [h for h, ignored in zip(output.instances, on_ignored) if not ignored]
        distances = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        accumulator.update([o.track_id for o in kept_objects], [h.track_id for h in hypotheses], distances,
                           frameid=index)
        rows, cols = linear_sum_assignment(-iou) if iou.size else ((), ())
        for row, col in zip(rows, cols):
            if iou[row, col] < MATCH_IOU:
                continue
            if hypotheses[col].centroid is None:
                without_3d += 1
            else:
                errors.append(float(np.linalg.norm(hypotheses[col].centroid - kept_objects[row].centroid)))
                depths.append(float(kept_objects[row].centroid[2]))
    return SequenceScore(accumulator, errors, depths, without_3d, len(outputs))


def summarise(scores: list[SequenceScore]) -> dict:
    """IDF1, MOTA, id switches (total and per 20 ground-truth tracks), recall, precision and centroid errors
    over sequences."""
    metrics = ["idf1", "mota", "num_switches", "num_unique_objects", "recall", "precision", "num_frames"]
    handler = motmetrics.metrics.create()
    table = handler.compute_many([s.accumulator for s in scores], metrics=metrics,
                                 names=[str(i) for i in range(len(scores))], generate_overall=True)
    overall = table.loc["OVERALL"]
    errors = np.concatenate([s.centroid_errors for s in scores]) if scores else np.zeros(0)
    summary = {
        "idf1": float(overall["idf1"]), "mota": float(overall["mota"]),
        "id_switches": int(overall["num_switches"]), "gt_tracks": int(overall["num_unique_objects"]),
        "id_switches_per_20_tracks": 20.0 * float(overall["num_switches"]) / max(int(overall["num_unique_objects"]), 1),
        "recall": float(overall["recall"]), "precision": float(overall["precision"]),
        "frames": int(overall["num_frames"]),
    }
    if len(errors):
        summary.update(centroid_error_median=float(np.median(errors)),
                       centroid_error_p95=float(np.percentile(errors, 95)), centroid_errors=int(len(errors)),
                       matched_without_3d=sum(s.matched_without_3d for s in scores))
    return summary


def cameras(sequence: RgbdSequence) -> tuple[PinholeCamera, PinholeCamera]:
    """(colour camera, depth camera) of a generated sequence."""
    return (PinholeCamera.from_k(sequence.colour_k, *sequence.config.colour_size),
            PinholeCamera.from_k(sequence.depth_k, *sequence.config.depth_size))


def benchmark_sequences(count: int, seed: int, **config) -> list[RgbdSequence]:
    """`count` sequences, alternately with depth at the colour resolution and at half of it."""
    sequences = []
    for index in range(count):
        depth_size = (640, 480) if index % 2 == 0 else (320, 240)
        sequences.append(RgbdSequence(RgbdSequenceConfig(depth_size=depth_size, **config), seed=seed + index))
    return sequences


def degraded_ground_truth(sequence: RgbdSequence, seed: int) -> Iterator[tuple[object, list, list[Observation]]]:
    """(a)'s input: for each processed frame (irregular steps), (frame, the ground-truth objects given, their
    observations: 10% dropped, masks jittered, 3D centroids from the geometry on the noisy depth)."""
    rng = np.random.default_rng([seed, 2])
    colour_camera, depth_camera = cameras(sequence)
    index = 0
    while index < len(sequence):
        frame = sequence[index]
        given, masks = [], []
        for obj in frame.objects:
            if obj.visible_fraction < MIN_VISIBLE_FRACTION or rng.random() < DROP_FRACTION:
                continue
            mask = jitter(InstanceMask(obj.mask, *obj.mask_offset), rng)
            if mask.area:
                given.append(obj)
                masks.append(mask)
        geometry = instances_3d(masks, depth_to_metres(frame.depth, "16UC1"), depth_camera, colour_camera)
        yield frame, given, [Observation(obj.class_id, 1.0, mask, None if g is None else g.centroid)
                             for obj, mask, g in zip(given, masks, geometry.instances)]
        index += int(rng.choice(FRAME_STEPS, p=FRAME_STEP_PROBABILITIES))


def track(tracker: MaskTracker, stamp: float, observations: list[Observation]) -> FrameOutput:
    """One frame through the tracker, as a `FrameOutput`."""
    tracked = tracker.update(stamp, observations)
    return FrameOutput(stamp, [OutputInstance(int(i), o.class_id, o.mask, o.centroid, bool(c))
                               for i, c, o in zip(tracked.ids, tracked.confirmed, observations)])


def jitter(mask: InstanceMask, rng: np.random.Generator) -> InstanceMask:
    """The mask dilated, eroded (elliptic kernel) or shifted by 1-JITTER_PX pixels, one of the three at random."""
    amount = int(rng.integers(1, JITTER_PX + 1))
    kind = int(rng.integers(3))
    if kind == 2:
        dx, dy = rng.integers(-amount, amount + 1, size=2)
        return mask.shifted(int(dx), int(dy))
    padded = cv2.copyMakeBorder(np.ascontiguousarray(mask.mask).view(np.uint8), amount, amount, amount, amount,
                                cv2.BORDER_CONSTANT, value=0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * amount + 1, 2 * amount + 1))
    changed = (cv2.dilate if kind == 0 else cv2.erode)(padded, kernel).astype(bool)
    return InstanceMask.tight(changed, mask.x - amount, mask.y - amount)


def frame_ground_truth(frame) -> _GroundTruthFrame:
    """The ground truth of a frame without its images (what `score_sequence` needs)."""
    return _GroundTruthFrame(frame.stamp, frame.objects)


def geometry_errors(sequence: RgbdSequence, frame_step: int) -> tuple[list[float], list[float], int]:
    """(b): (centroid errors in metres, ground-truth depths, objects without 3D) on ground-truth masks."""
    colour_camera, depth_camera = cameras(sequence)
    errors, depths, without_3d = [], [], 0
    for index in range(0, len(sequence), frame_step):
        frame = sequence[index]
        objects = [o for o in frame.objects if o.visible_fraction >= MIN_VISIBLE_FRACTION]
        geometry = instances_3d([InstanceMask(o.mask, *o.mask_offset) for o in objects],
                                depth_to_metres(frame.depth, "16UC1"), depth_camera, colour_camera)
        for obj, instance in zip(objects, geometry.instances):
            if instance is None:
                without_3d += 1
                continue
            errors.append(float(np.linalg.norm(instance.centroid - obj.centroid)))
            depths.append(float(obj.centroid[2]))
    return errors, depths, without_3d


class DemoPipeline:
    """(c): what the node does with depth and tracking on: predictor, label image (higher score wins
    overlaps), geometry of each published instance, tracker."""

    def __init__(self, predictor, sequence: RgbdSequence, tracker_config: TrackerConfig = TrackerConfig(),
                 geometry_options: GeometryOptions = GeometryOptions()):
        self.predictor = predictor
        self.colour_camera, self.depth_camera = cameras(sequence)
        self.tracker = MaskTracker(tracker_config)
        self.geometry_options = geometry_options

    def __call__(self, stamp: float, colour: np.ndarray, depth_millimetres: np.ndarray) -> FrameOutput:
        labels = label_instances(self.predictor(colour))
        masks = masks_from_label_image(labels.label_image)                     # {i: mask}, i = 1..N
        instance_masks = [masks[i] for i in labels.ids.tolist()]
        geometry: FrameGeometry = instances_3d(instance_masks, depth_to_metres(depth_millimetres, "16UC1"),
                                               self.depth_camera, self.colour_camera, self.geometry_options)
        observations = [Observation(int(c), float(s), m, None if g is None else g.centroid) for c, s, m, g in
                        zip(labels.class_ids, labels.scores, instance_masks, geometry.instances)]
        return track(self.tracker, stamp, observations)


def cost_per_frame(frames: int, num_instances: int, seed: int, rounds: int = 3) -> dict:
    """(d): median milliseconds of depth conversion + geometry + tracking per frame at 640x480."""
    sequence = RgbdSequence(RgbdSequenceConfig(num_frames=frames, num_objects=(num_instances + 4,) * 2,
                                               object_sizes=(0.1, 0.2)), seed=seed)
    colour_camera, depth_camera = cameras(sequence)
    inputs = []
    for frame in sequence:
        objects = sorted(frame.objects, key=lambda o: -o.visible_fraction)[:num_instances]
        if len(objects) == num_instances:
            inputs.append((frame.stamp, frame.depth, [(o.class_id, InstanceMask(o.mask, *o.mask_offset))
                                                      for o in objects]))
    wall, cpu, parts = [], [], {"depth_to_metres": [], "geometry": [], "tracking": []}   # CPU seconds
    for _ in range(rounds):
        tracker = MaskTracker()
        for stamp, depth, instances in inputs:
            start, start_cpu = time.perf_counter(), time.process_time()
            metres = depth_to_metres(depth, "16UC1")
            converted = time.process_time()
            geometry = instances_3d([mask for _, mask in instances], metres, depth_camera, colour_camera)
            measured = time.process_time()
            tracker.update(stamp, [Observation(c, 1.0, m, None if g is None else g.centroid)
                                   for (c, m), g in zip(instances, geometry.instances)])
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            parts["depth_to_metres"].append(converted - start_cpu)
            parts["geometry"].append(measured - converted)
            parts["tracking"].append(cpu[-1] - (measured - start_cpu))
    return {"median_ms": 1000 * float(np.median(wall)), "p90_ms": 1000 * float(np.percentile(wall, 90)),
            "median_cpu_ms": 1000 * float(np.median(cpu)),
            "median_cpu_ms_by_part": {name: 1000 * float(np.median(times)) for name, times in parts.items()},
            "frames": len(inputs), "rounds": rounds, "instances": num_instances,
            "mean_mask_pixels": float(np.mean([m.area for _, _, instances in inputs for _, m in instances]))}


def _depth_table(errors: Sequence[float], depths: Sequence[float]) -> dict:
    errors, depths = np.asarray(errors), np.asarray(depths)
    table = {}
    for low, high in zip(DEPTH_BINS[:-1], DEPTH_BINS[1:]):
        chosen = errors[(depths >= low) & (depths < high)]
        if len(chosen):
            table[f"{low:g}-{high:g} m"] = {"median_m": float(np.median(chosen)),
                                            "p95_m": float(np.percentile(chosen, 95)), "count": int(len(chosen))}
    return table


def measure_tracker(sequences: list[RgbdSequence], seed: int) -> dict:
    """(a), with and without 3D centroids: scores over the instances given to the tracker (a dropped instance
    is the detector's miss, not a tracking error), and IDF1 counting the dropped ones as missed too."""
    runs = {False: [], True: []}          # with 3D centroids or not -> [(frames, given frames, outputs)]
    for index, sequence in enumerate(sequences):
        trackers = {use_depth: MaskTracker() for use_depth in runs}
        frames, given_frames, outputs = [], [], {use_depth: [] for use_depth in runs}
        for frame, given, observations in degraded_ground_truth(sequence, seed + index):
            frames.append(frame_ground_truth(frame))
            given_frames.append(_GroundTruthFrame(frame.stamp, given))
            for use_depth, tracker in trackers.items():
                used = observations if use_depth else [replace(o, centroid=None) for o in observations]
                outputs[use_depth].append(track(tracker, frame.stamp, used))
        for use_depth in runs:
            runs[use_depth].append((frames, given_frames, outputs[use_depth]))
    results = {}
    for use_depth, sequence_runs in runs.items():
        summary = summarise([score_sequence(given, outputs) for _, given, outputs in sequence_runs])
        summary["idf1_counting_dropped_as_missed"] = summarise(
            [score_sequence(frames, outputs) for frames, _, outputs in sequence_runs])["idf1"]
        results["with_3d" if use_depth else "masks_only"] = summary
    return results


def measure_geometry(sequences: list[RgbdSequence], frame_step: int = 5) -> dict:
    """(b) over every `frame_step`-th frame of the sequences."""
    errors, depths, without_3d = [], [], 0
    for sequence in sequences:
        sequence_errors, sequence_depths, sequence_without = geometry_errors(sequence, frame_step)
        errors += sequence_errors
        depths += sequence_depths
        without_3d += sequence_without
    return {"centroid_error_median_m": float(np.median(errors)),
            "centroid_error_p95_m": float(np.percentile(errors, 95)), "instances": len(errors),
            "without_3d": without_3d, "by_depth": _depth_table(errors, depths)}


def measure_demo_model(predictor, sequences: list[RgbdSequence]) -> dict:
    """(c): every frame of the sequences through `DemoPipeline`; all published instances scored, and only the
    confirmed ones (what a consumer filtering on `confirmed` sees)."""
    scores, confirmed_scores, latencies = [], [], []
    for sequence in sequences:
        pipeline = DemoPipeline(predictor, sequence)
        frames, outputs = [], []
        for frame in sequence:
            start = time.perf_counter()
            outputs.append(pipeline(frame.stamp, frame.colour, frame.depth))
            latencies.append(time.perf_counter() - start)
            frames.append(frame_ground_truth(frame))
        scores.append(score_sequence(frames, outputs))
        confirmed_scores.append(score_sequence(frames, [FrameOutput(o.stamp, [i for i in o.instances if i.confirmed])
                                                        for o in outputs]))
    return summarise(scores) | {
        "idf1_confirmed_only": summarise(confirmed_scores)["idf1"],
        "median_frame_s": float(np.median(latencies)),
        "centroid_by_depth": _depth_table(np.concatenate([s.centroid_errors for s in scores]),
                                          np.concatenate([s.centroid_depths for s in scores]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8, help="sequences for (a) and (b)")
    parser.add_argument("--frames", type=int, default=150, help="frames per sequence for (a) and (b), at 30 Hz")
    parser.add_argument("--model-sequences", type=int, default=4, help="sequences per scene kind for (c)")
    parser.add_argument("--model-frames", type=int, default=90, help="frames per sequence for (c)")
    parser.add_argument("--model-frame-rate", type=float, default=15.0, help="frame rate of the (c) sequences")
    parser.add_argument("--cost-frames", type=int, default=60, help="frames timed for (d)")
    parser.add_argument("--seed", type=int, default=1000, help="first sequence seed")
    parser.add_argument("--skip-model", action="store_true", help="leave out (c)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
               "command": "python -m sparseinst_core.tools.benchmark_3d",
               "arguments": {key: value for key, value in vars(args).items() if key != "json"}}
    sequences = benchmark_sequences(args.sequences, args.seed, num_frames=args.frames)
    for kind, numbers in measure_tracker(sequences, args.seed).items():
        results[f"a_tracker_on_ground_truth_{kind}"] = numbers
        _print(f"(a) tracker alone on degraded ground truth, {kind.replace('_', ' ')}", numbers)
    results["b_geometry_on_ground_truth_masks"] = measure_geometry(sequences)
    _print("(b) geometry on ground-truth masks", results["b_geometry_on_ground_truth_masks"])

    if not args.skip_model:
        loaded = load_predictor(DEMO_WEIGHTS)
        scenes = {"one_object_per_class": dict(num_objects=(3, 5), distinct_classes=True),
                  "crowded_classes_repeat": dict(num_objects=(4, 7))}
        for offset, (scene, settings) in enumerate(scenes.items()):
            sequences = benchmark_sequences(args.model_sequences, args.seed + 100 * (offset + 1),
                                            num_frames=args.model_frames, frame_rate=args.model_frame_rate,
                                            **settings)
            key = f"c_demo_model_{scene}"
            results[key] = {"model": loaded.description, "scene": settings} | measure_demo_model(loaded.predictor,
                                                                                                sequences)
            _print(f"(c) demo model on every frame ({args.model_frame_rate:g} Hz), {scene.replace('_', ' ')}",
                   results[key])

    results["d_cost_3d_and_tracking_640x480"] = cost_per_frame(args.cost_frames, 20, args.seed + 300)
    _print("(d) cost of 3D + tracking per frame, 640x480, 20 instances", results["d_cost_3d_and_tracking_640x480"])
    results["machine"] += f" (at the end: {os.getloadavg()[0]:.1f})"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _print(title: str, numbers: dict) -> None:
    print(title, flush=True)
    for key, value in numbers.items():
        if isinstance(value, dict):
            print(f"  {key}:")
            for inner_key, inner in value.items():
                print(f"    {inner_key}: {inner}")
        else:
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
