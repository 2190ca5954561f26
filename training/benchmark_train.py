"""Benchmark: train r18_giam from scratch on the synthetic shapes on this machine's CPU, report AP.

    python training/benchmark_train.py [--output-dir outputs/bench_train] [--max-iters N] [--data DIR]

Generates the dataset (once), runs training/train.py with the settings below, then prints the loss
curve, the AP curve, the final mask AP/AP50, the wall time and the iterations, and whether the target
(mask AP50 >= 0.7 within 30 minutes) was met. Extra arguments after `--` go to train.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sparseinst_core.data.synthetic import DEMO_STYLE, generate_synthetic_dataset
from sparseinst_core.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "sparseinst_core" / "assets" / "demo_r18_synthetic.safetensors"
TARGET_AP50 = 0.7
TIME_LIMIT_S = 30 * 60
# The shapes drawn large enough for stride-8 features at these small sizes, and each class in its own hue
# band (DEMO_STYLE): from scratch, recognising shapes alone does not emerge in 30 CPU minutes (class
# accuracy of the matched predictions stays at chance, 1 in 6, for 3500 iterations), colour does within a
# few hundred; the masks are learned either way.
DATASET = {"num_train": 4000, "num_val": 100, "image_size": 192, "seed": 0, **DEMO_STYLE}
# From-scratch settings for 2 CPU cores: small inputs, bf16 + channels-last (oneDNN/AMX), an lr 12x the
# official fine-tuning one with a short warm-up, and gradient clipping for the early, noisy updates.
TRAIN_SETTINGS = ["--preset", "r18_giam", "--batch-size", "8", "--lr", "6e-4", "--warmup-iters", "50",
                  "--input-sizes", "160,176,192", "--max-size", "256", "--amp", "bf16", "--channels-last",
                  "--clip-grad", "1.0", "--workers", "1", "--log-period", "10", "--seed", "0"]


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "bench_train")
    parser.add_argument("--data", type=Path, default=REPO / "outputs" / "bench_data_v2",
                        help="synthetic dataset folder (generated if missing)")
    parser.add_argument("--max-iters", type=int, default=3800)
    parser.add_argument("--eval-period", type=int, default=950)
    parser.add_argument("--export-demo", action="store_true",
                        help=f"also write the trained model as the shipped demo model {DEMO_MODEL.relative_to(REPO)} "
                             "(fp16 safetensors) with its model card")
    return parser.parse_args(argv), extra


def train_command(args, extra: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "training" / "train.py"), *TRAIN_SETTINGS,
            "--train-json", str(args.data / "annotations" / "train.json"), "--train-images", str(args.data / "train"),
            "--val-json", str(args.data / "annotations" / "val.json"), "--val-images", str(args.data / "val"),
            "--output-dir", str(args.output_dir), "--max-iters", str(args.max_iters),
            "--eval-period", str(args.eval_period), "--checkpoint-period", str(args.eval_period),
            *([] if "--resume" in extra else ["--overwrite"]), *extra]   # a benchmark starts afresh


def print_curves(output_dir: Path) -> None:
    records = read_metrics(output_dir / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    step = max(1, len(train) // 20)
    print("\niteration   loss   loss_ce  loss_mask  loss_dice  objectness")
    for r in train[::step] + ([train[-1]] if train and (len(train) - 1) % step else []):
        print(f"{r['iteration']:9d} {r['loss']:7.3f} {r['loss_ce']:8.3f} {r['loss_mask']:10.3f} "
              f"{r['loss_dice']:10.3f} {r['loss_objectness']:11.3f}")
    print("\niteration  mask AP   AP50   AP75")
    for r in records:
        if r.get("segm/AP") is not None:
            print(f"{r['iteration']:9d} {100 * r['segm/AP']:7.2f} {100 * r['segm/AP50']:6.2f} "
                  f"{100 * r['segm/AP75']:6.2f}")


def export_demo(model_path: Path, metrics: dict, wall: float, command: str, train_argv: list[str]) -> None:
    """fp16 weights (half the size, no measurable change in the masks) + a model card next to them."""
    import torch

    from sparseinst_core import load_model, save_checkpoint

    model, report = load_model(model_path)
    class_names = report.metadata["class_names"]
    save_checkpoint(model.half(), DEMO_MODEL, class_names=class_names)
    DEMO_MODEL.chmod(0o644)   # a package file, readable by everyone
    per_class = "\n".join(f"| {name} | {100 * metrics[f'segm/AP-{name}']:.1f} |" for name in class_names)
    DEMO_MODEL.with_suffix(".md").write_text(f"""# Demo model: r18_giam trained on the synthetic shapes

`{DEMO_MODEL.name}` ({DEMO_MODEL.stat().st_size / 2**20:.1f} MiB) is SparseInst `r18_giam` trained from
scratch by this repository's training scripts on the generated shapes dataset, on a 2-core CPU, in
{wall / 60:.1f} minutes ({metrics['iteration']} iterations of 8 images). Weights are stored in float16 (they
load into a float32 model); the preset, config and class names are in the file's metadata.

Classes (label order): {", ".join(class_names)}.

Produced by (from the repository root, torch {torch.__version__}):

    {command}

which generates the dataset (`generate_synthetic_dataset(outputs/bench_data_v2, **{DATASET})`: shapes whose
class sets both their outline and their hue band, see `DEMO_STYLE`) and runs:

    python {" ".join(str(Path(part).relative_to(REPO)) if part.startswith(str(REPO)) else part
                     for part in train_argv[1:])}

Mask AP on the 100 generated validation images (COCOeval segm, test size {model.config.min_size_test}):
mask AP {100 * metrics['segm/AP']:.1f}, AP50 {100 * metrics['segm/AP50']:.1f}, AP75 {100 * metrics['segm/AP75']:.1f}.

| class | mask AP |
|---|---|
{per_class}
""")
    print(f"wrote {DEMO_MODEL} and {DEMO_MODEL.with_suffix('.md')}")


def main() -> int:
    args, extra = parse_args()
    if not (args.data / "annotations" / "val.json").is_file():
        print(f"generating the synthetic dataset in {args.data} ({DATASET})", flush=True)
        generate_synthetic_dataset(args.data, **DATASET)
    command = train_command(args, extra)
    print("command:", " ".join(command), flush=True)
    start = time.perf_counter()
    status = subprocess.call(command, cwd=REPO)
    wall = time.perf_counter() - start
    if status != 0:
        print(f"train.py failed with exit status {status}")
        return status
    print_curves(args.output_dir)
    metrics = json.loads((args.output_dir / "metrics.json").read_text())
    passed = metrics["segm/AP50"] >= TARGET_AP50 and wall <= TIME_LIMIT_S
    if args.export_demo:
        export_demo(args.output_dir / "model_final.pth", metrics, wall, " ".join(["python", *sys.argv]), command)
    print(f"\nfinal mask AP {100 * metrics['segm/AP']:.2f}, AP50 {100 * metrics['segm/AP50']:.2f} after "
          f"{metrics['iteration']} iterations in {wall / 60:.1f} min (training, evaluations and start-up); "
          f"target AP50 >= {100 * TARGET_AP50:.0f} within {TIME_LIMIT_S // 60} min: {'met' if passed else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
