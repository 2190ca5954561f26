"""An offline demo of the shipped demo model (r18_giam trained on generated shapes) on generated scenes.

    python -m sparseinst_core.tools.demo --output outputs/demo      (or the `sparseinst-demo` command)

renders scenes with the synthetic generator, runs the predictor and writes overlay PNGs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from ..data.synthetic import DEMO_STYLE, render_scene
from ..inference import DEMO_WEIGHTS, PRECISIONS, SCORE_THRESHOLD, load_predictor
from ..inference.visualize import draw_overlay


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/demo", help="folder for the overlay PNGs")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--min-size", type=int, default=0, help="default: the model's training size")
    parser.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD)
    args = parser.parse_args(argv)

    loaded = load_predictor(DEMO_WEIGHTS, min_size=args.min_size, score_threshold=args.score_threshold,
                            device=args.device, precision=args.precision)
    predictor, class_names = loaded.predictor, loaded.class_names
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print(f"demo model {loaded.description} on {predictor.device} ({args.precision}), "
          f"classes: {', '.join(class_names)}")
    latencies = []
    for index in range(args.num_images):
        image, gt_masks, gt_labels = render_scene(rng, args.height, args.width, **DEMO_STYLE)
        start = time.perf_counter()
        result = predictor(image)
        latencies.append(time.perf_counter() - start)
        found = ", ".join(f"{class_names[l]} {s:.2f}" for l, s in zip(result.labels, result.scores))
        truth = ", ".join(sorted(class_names[l] for l in gt_labels))
        print(f"[{index}] {latencies[-1] * 1000:.0f} ms  detected {len(result)}: {found or '-'}")
        print(f"     ground truth {len(gt_labels)}: {truth}")
        path = output / f"overlay_{index:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(draw_overlay(image, result, class_names), cv2.COLOR_RGB2BGR))
    print(f"median latency {np.median(latencies) * 1000:.0f} ms; overlays written to {output}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
