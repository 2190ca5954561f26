"""The shipped demo model (r18_giam trained on generated shapes) and an offline demo on generated scenes.

    python -m sparseinst_core.demo --output outputs/demo

renders scenes with the synthetic generator, runs the Predictor and writes overlay PNGs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_WEIGHTS_NAME = "demo_r18_synthetic"


def demo_weights_path() -> Path:
    """Path of the shipped demo checkpoint (safetensors preferred, .pth accepted)."""
    for suffix in (".safetensors", ".pth"):
        path = ASSETS / f"{DEMO_WEIGHTS_NAME}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"the demo model {ASSETS / DEMO_WEIGHTS_NAME}.safetensors is missing from this "
                            "installation; reinstall the package or pass your own weights")


def load_demo_model():
    """Return (model, class_names) of the shipped demo model, in eval mode."""
    from .checkpoint import load_model
    from .data.synthetic import SYNTHETIC_CLASSES

    model, report = load_model(demo_weights_path())
    return model.eval(), list(report.metadata.get("class_names") or SYNTHETIC_CLASSES)


def main(argv=None) -> int:
    from .data.synthetic import DEMO_STYLE, render_scene
    from .predictor import Predictor
    from .visualize import draw_overlay

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/demo", help="folder for the overlay PNGs")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--min-size", type=int, default=None, help="default: the model's training size")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    args = parser.parse_args(argv)

    model, class_names = load_demo_model()
    min_size = args.min_size or model.config.min_size_test
    predictor = Predictor(model, min_size=min_size, max_size=max(model.config.max_size_test, min_size),
                          score_threshold=args.score_threshold, device=args.device, precision=args.precision)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print(f"demo model {demo_weights_path().name} on {predictor.device} ({args.precision}), "
          f"input shorter side {min_size}, classes: {', '.join(class_names)}")
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
