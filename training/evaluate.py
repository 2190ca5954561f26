"""COCO mask AP of a SparseInst checkpoint (official or ours) on a COCO-format set.

    python training/evaluate.py --preset P --weights W --val-json J --val-images DIR [--output-dir OUT]
    torchrun --nproc_per_node 4 training/evaluate.py ...   (images split over the processes)

Images go through the Predictor's procedure (shorter side --input-size, longer side <= --max-size, padding
with the pixel mean, official post-processing). Writes OUT/metrics.json ("segm/AP", "segm/AP50", ...
as fractions) and OUT/coco_instances_results.json, and prints the COCO AP table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a source checkout too

from torch.utils.data import DataLoader  # noqa: E402

from sparseinst_core.checkpoint import load_model  # noqa: E402
from sparseinst_core.data.coco import CocoInstanceDataset  # noqa: E402
from sparseinst_core.data.transforms import TEST_MAX_SIZE, TEST_MIN_SIZE, build_test_transforms  # noqa: E402
from sparseinst_core.distributed import cleanup_distributed, init_distributed, setup_logger  # noqa: E402
from sparseinst_core.engine import (  # noqa: E402
    EVAL_MASK_THRESHOLD, EVAL_SCORE_THRESHOLD, PadWithPixelMean, RankShard, evaluate, ignore_interrupts_in_worker,
)
from sparseinst_core.evaluation import CocoMaskEvaluator  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True,
                        help="model preset, e.g. r50_giam (checkpoints of ours also record it)")
    parser.add_argument("--weights", required=True, type=Path, help="checkpoint: official .pth or ours (.pth, .safetensors)")
    parser.add_argument("--val-json", required=True, type=Path, help="COCO instance annotations")
    parser.add_argument("--val-images", required=True, type=Path, help="folder of the images")
    parser.add_argument("--output-dir", type=Path,
                        help="where metrics.json goes (default: outputs/evaluate_<weights name>)")
    parser.add_argument("--input-size", type=int, default=TEST_MIN_SIZE, help="shorter side at test time (640)")
    parser.add_argument("--max-size", type=int, default=TEST_MAX_SIZE, help="cap on the longer side (853)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none", help="mixed-precision inference")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass and process")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    parser.add_argument("--score-threshold", type=float, default=EVAL_SCORE_THRESHOLD,
                        help="keep instances above this score (official evaluation: 0.005)")
    parser.add_argument("--mask-threshold", type=float, default=EVAL_MASK_THRESHOLD, help="mask binarisation (0.45)")
    args = parser.parse_args(argv)
    if args.input_size <= 0 or args.max_size < args.input_size or args.batch_size <= 0 or args.workers < 0:
        parser.error("need 0 < --input-size <= --max-size, --batch-size > 0 and --workers >= 0")
    if args.output_dir is None:
        args.output_dir = Path("outputs") / f"evaluate_{args.weights.stem}"
    return args


def label_mapping(report_metadata: dict, dataset: CocoInstanceDataset, num_classes: int) -> list[int]:
    """Category id of each model label: recorded by train.py, else the dataset's ids in ascending order."""
    recorded = report_metadata.get("label_to_category_id")
    mapping = list(recorded) if recorded else list(dataset.label_to_category_id)
    if len(mapping) != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but {dataset.annotation_file} has "
                         f"{len(mapping)} categories; evaluate on data with the model's categories")
    names = report_metadata.get("class_names")
    dataset_names = [dataset.coco.cats[c]["name"] for c in mapping if c in dataset.coco.cats]
    if names and dataset_names != list(names)[:len(dataset_names)]:
        print(f"warning: the checkpoint's class names {list(names)} differ from the dataset's {dataset_names}",
              file=sys.stderr)
    return mapping


def run(args, ctx, logger) -> int:
    dataset = CocoInstanceDataset(args.val_json, args.val_images, build_test_transforms(args.input_size, args.max_size))
    dataset.check_image_files("evaluation set")
    model, report = load_model(args.weights, preset=args.preset)
    model.to(ctx.device)
    mapping = label_mapping(report.metadata, dataset, model.num_classes)
    logger.info(f"evaluating {args.weights} ({report.layout} layout, {model.num_classes} classes) on "
                f"{len(dataset)} images at {args.input_size}/{args.max_size}, {ctx.world_size} process(es)")
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=RankShard(len(dataset)),
                        collate_fn=PadWithPixelMean(model.config.pixel_mean), num_workers=args.workers,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=ignore_interrupts_in_worker)
    evaluator = CocoMaskEvaluator(dataset.coco, mapping)
    metrics = evaluate(model, loader, evaluator, device=ctx.device, amp=args.amp,
                       score_threshold=args.score_threshold, mask_threshold=args.mask_threshold,
                       output_dir=args.output_dir if ctx.is_main else None, progress=ctx.is_main)
    if ctx.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        path = args.output_dir / "metrics.json"
        path.write_text(json.dumps({**metrics, "weights": str(args.weights), "input_size": args.input_size,
                                    "max_size": args.max_size}, indent=2))
        logger.info(f"mask AP {metrics['segm/AP']}, AP50 {metrics['segm/AP50']} (fractions); wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = init_distributed(args.device)
    logger = setup_logger(None, ctx.rank, name="sparseinst.evaluate")
    try:
        return run(args, ctx, logger)
    except (ValueError, FileNotFoundError) as error:
        logger.error(f"error: {error}")
        return 1
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    sys.exit(main())
