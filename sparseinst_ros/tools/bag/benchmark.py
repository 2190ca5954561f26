"""How fast `sparseinst_bag run` goes compared with the predictor alone, on the same frames in the same run.

    python -m sparseinst_ros.tools.bag.benchmark [--frames 30] [--rounds 6] [--size 640x480] [--encoding rgb8]
        [--params-file YAML] [--weights W] [--device cpu]        (make bench-bag)

Writes a recording of generated scenes, then alternates, round after round, the predictor alone on the
decoded frames and `run` on the recording (reading, decoding, inference, label image, detections, overlay
as the parameters say, serialising and writing), so that both see the same machine load. Prints frames/s of
each per round, the median of the per-round ratios run / predictor and the time per stage of `run`; the
target is a ratio of at least 0.9 (bag I/O is not the bottleneck). Exit status 1 below the target.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sparseinst_core.data.synthetic import DEMO_STYLE, render_scene

from ...conversions import numpy_to_image, rgb_to_compressed
from ...frame_processor import decode
from .node_parameters import load_model, node_parameter_values
from .output import SafeOutput
from .reading import find_image_topic, open_bag
from .run import run_recording
from .writing import OutputBag

TOPIC = "/camera/image_raw"
TARGET_RATIO = 0.9


def write_recording(path: Path, frames: int, height: int, width: int, encoding: str) -> None:
    """`frames` generated scenes on TOPIC (TOPIC/compressed for "jpeg"), 30 Hz."""
    rng = np.random.default_rng(0)
    recording = OutputBag(path)
    for index in range(frames):
        rgb = render_scene(rng, height, width, **DEMO_STYLE)[0]
        message = rgb_to_compressed(rgb, "jpeg") if encoding == "jpeg" else numpy_to_image(rgb, "rgb8")
        timestamp = 1_700_000_000 * 10**9 + index * 33_333_333
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(timestamp, 10**9)
        recording.write(TOPIC + ("/compressed" if encoding == "jpeg" else ""), message, timestamp)
    recording.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="frames per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated frames")
    parser.add_argument("--encoding", choices=("rgb8", "jpeg"), default="rgb8")
    parser.add_argument("--params-file", type=Path)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    values, _ = node_parameter_values(args.params_file, weights=args.weights, device=args.device)
    model = load_model(values)
    print(f"model: {model.description} on {model.predictor.device} ({model.predictor.precision}); "
          f"{args.frames} frames {width}x{height} {args.encoding}, overlay {values['publish_overlay']}")
    with tempfile.TemporaryDirectory(prefix="bench_bag_") as folder:
        bag = Path(folder) / "recording"
        write_recording(bag, args.frames, height, width, args.encoding)
        with open_bag(bag) as reader:
            topic = find_image_topic(reader, TOPIC + ("/compressed" if args.encoding == "jpeg" else ""), bag)
            frames = [decode(recorded.deserialize(topic.message_type))
                      for recorded in _messages(reader, topic, bag)]
            model.predictor(frames[0])                                     # warm-up
            predictor_fps, run_fps, summary = [], [], None
            for round_index in range(args.rounds):
                # alternate which goes first, so that a load that rises or falls favours neither
                for which in (("predictor", "run") if round_index % 2 == 0 else ("run", "predictor")):
                    if which == "predictor":
                        start = time.perf_counter()
                        for rgb in frames:
                            model.predictor(rgb)
                        predictor_fps.append(len(frames) / (time.perf_counter() - start))
                    else:
                        summary = run_recording(reader, bag, topic, SafeOutput(Path(folder) / "out", overwrite=True),
                                                model, values, progress=False)
                        run_fps.append(summary.done / summary.elapsed_seconds)
                print(f"round {round_index + 1}: predictor alone {predictor_fps[-1]:.2f} frames/s, "
                      f"run {run_fps[-1]:.2f} frames/s, ratio {run_fps[-1] / predictor_fps[-1]:.3f}")
    ratio = statistics.median(run / alone for run, alone in zip(run_fps, predictor_fps))
    stages = ", ".join(f"{stage} {1e3 * seconds / summary.read:.1f} ms"
                       for stage, seconds in summary.stage_seconds.items())
    print(f"median: predictor alone {statistics.median(predictor_fps):.2f} frames/s, run "
          f"{statistics.median(run_fps):.2f} frames/s; median ratio of the rounds {ratio:.3f} "
          f"(target >= {TARGET_RATIO})")
    print(f"run, time per frame (last round): {stages}")
    return 0 if ratio >= TARGET_RATIO else 1


def _messages(reader, topic, bag):
    from .reading import recorded_messages
    return recorded_messages(reader, topic.connections, bag)


if __name__ == "__main__":
    raise SystemExit(main())
