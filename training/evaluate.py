"""COCO mask AP of a SparseInst checkpoint (official or ours) on a COCO-format set.

    python training/evaluate.py --preset P --weights W --val-json J --val-images DIR [--output-dir OUT]
    torchrun --nproc_per_node 4 training/evaluate.py ...   (images split over the processes)

Images go through the same `Predictor` the ROS node runs (resize of the shorter side to --input-size,
default the size recorded in the checkpoint, longer side <= --max-size, padding with the pixel mean, the
optimised backend and the fast post-processing), so the AP reported is the AP of what the robot runs.
Writes OUT/metrics.json ("segm/AP", "segm/AP50", ... as fractions) and OUT/coco_instances_results.json,
and prints the COCO AP table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sparseinst_core import Predictor, load_model
from sparseinst_core.data.coco import CocoImages, CocoInstanceDataset
from sparseinst_core.inference.defaults import EVAL_SCORE_THRESHOLD, MASK_THRESHOLD
from sparseinst_core.training.distributed import cleanup_distributed, init_distributed, setup_logger
from sparseinst_core.training.evaluation import CocoMaskEvaluator, evaluate_predictor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True,
                        help="model preset, e.g. r50_giam (checkpoints of ours also record it)")
    parser.add_argument("--weights", required=True, type=Path, help="checkpoint: official .pth or ours (.pth, .safetensors)")
    parser.add_argument("--val-json", required=True, type=Path, help="COCO instance annotations")
    parser.add_argument("--val-images", required=True, type=Path, help="folder of the images")
    parser.add_argument("--output-dir", type=Path,
                        help="where metrics.json goes (default: outputs/evaluate_<weights name>)")
    parser.add_argument("--input-size", type=int, default=0,
                        help="shorter side at test time (default: the checkpoint's own, 640 for official ones)")
    parser.add_argument("--max-size", type=int, default=0,
                        help="cap on the longer side (default: the checkpoint's own, 853 for official ones)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                        help="inference precision: none (fp32), fp16 (CUDA) or bf16")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per predictor call and process (images of one padded size share a forward "
                             "pass; the results equal batch size 1's up to float rounding)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loading processes")
    parser.add_argument("--score-threshold", type=float, default=EVAL_SCORE_THRESHOLD,
                        help="keep instances above this score (official evaluation: 0.005)")
    parser.add_argument("--mask-threshold", type=float, default=MASK_THRESHOLD, help="mask binarisation (0.45)")
    args = parser.parse_args(argv)
    if (args.input_size < 0 or args.max_size < 0 or (args.input_size and args.max_size and args.max_size < args.input_size)
            or args.batch_size <= 0 or args.workers < 0):
        parser.error("need 0 < --input-size <= --max-size (0: the checkpoint's), --batch-size > 0 and --workers >= 0")
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
    dataset = CocoInstanceDataset(args.val_json, args.val_images)
    dataset.check("evaluation set")
    model, report = load_model(args.weights, preset=args.preset)
    mapping = label_mapping(report.metadata, dataset, model.num_classes)
    min_size = args.input_size or model.config.min_size_test
    max_size = args.max_size or max(model.config.max_size_test, min_size)
    predictor = Predictor(model.eval(), min_size=min_size, max_size=max_size, score_threshold=args.score_threshold,
                          mask_threshold=args.mask_threshold, device=ctx.device,
                          precision="fp32" if args.amp == "none" else args.amp)
    logger.info(f"evaluating {args.weights} ({report.layout} layout, {model.num_classes} classes) on "
                f"{len(dataset)} images at {min_size}/{max_size} through the predictor ({predictor.backend.name}, "
                f"{predictor.precision} on {predictor.device}), {ctx.world_size} process(es)")
    evaluator = CocoMaskEvaluator(dataset.coco, mapping)
    metrics = evaluate_predictor(predictor, CocoImages(dataset), evaluator, batch_size=args.batch_size,
                                 workers=args.workers, output_dir=args.output_dir if ctx.is_main else None,
                                 progress=ctx.is_main)
    if ctx.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        path = args.output_dir / "metrics.json"
        path.write_text(json.dumps({**metrics, "weights": str(args.weights), "input_size": min_size,
                                    "max_size": max_size}, indent=2))
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
