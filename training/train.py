"""Train SparseInst on COCO-format data, on one CPU/GPU or many with torchrun.

    python training/train.py --preset r18_giam --train-json J --train-images DIR \\
        --val-json J --val-images DIR --output-dir OUT [--max-iters N] [--batch-size B] [--lr LR] \\
        [--input-sizes 224,256,288] [--max-size S] [--weights W] [--resume | --overwrite] [--device D]
        [--skip-bad-images]
    torchrun --nproc_per_node 4 training/train.py ...   (same arguments; --batch-size is the global batch)

Writes OUT/last_checkpoint.pth (every --checkpoint-period iterations and on SIGTERM/SIGINT, resumable
with --resume), OUT/model_final.pth, OUT/metrics.jsonl, OUT/metrics.json (final "segm/AP", "segm/AP50",
...), OUT/training_curves.png, OUT/tensorboard/ and OUT/log.txt. An OUT that already holds a run is
refused unless --resume (continue it) or --overwrite (delete its files first) is given. Every image and
annotation is checked before the first iteration; --skip-bad-images leaves out the bad ones and lists
them in OUT/skipped_images.json.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from sparseinst_core import Predictor, build_model, get_preset, load_checkpoint, save_checkpoint
from sparseinst_core.data.coco import CocoImages, CocoInstanceDataset
from sparseinst_core.data.transforms import CROP_PROBABILITY, TRAIN_MAX_SIZE, TRAIN_MIN_SIZES, build_train_transforms
from sparseinst_core.inference.defaults import EVAL_SCORE_THRESHOLD, MASK_THRESHOLD
from sparseinst_core.training import SparseInstCriterion
from sparseinst_core.training.distributed import (
    any_across_ranks, cleanup_distributed, gather_objects, init_distributed, mean_across_ranks, setup_logger,
)
from sparseinst_core.training.engine import (
    NonFiniteLossError, PadWithPixelMean, SeededItems, TrainBatchSampler, ignore_interrupts_in_worker,
    load_training_state, loader_iterator, move_targets, save_training_checkpoint, train_one_step,
)
from sparseinst_core.training.evaluation import CocoMaskEvaluator, evaluate_predictor
from sparseinst_core.training.metrics_log import CURVES_PNG, METRICS_JSONL, MetricsLog, plot_curves
from sparseinst_core.training.optimizer import build_optimizer, build_scheduler, default_schedule

LAST_CHECKPOINT = "last_checkpoint.pth"
FINAL_MODEL = "model_final.pth"
SKIPPED_IMAGES = "skipped_images.json"
# A folder holding any of these holds a run that a new one must not silently replace.
RUN_FILES = (LAST_CHECKPOINT, FINAL_MODEL, METRICS_JSONL, "metrics.json")
# Everything a run writes into the folder: what --overwrite deletes (nothing else of the folder's).
RUN_OUTPUTS = (*RUN_FILES, CURVES_PNG, "log.txt", SKIPPED_IMAGES, "tensorboard", "inference")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def model_override(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a Python literal (numbers, tuples, True) or a bare string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="model preset, e.g. r18_giam or r50_giam")
    parser.add_argument("--train-json", required=True, type=Path, help="COCO instance annotations for training")
    parser.add_argument("--train-images", required=True, type=Path, help="folder of the training images")
    parser.add_argument("--val-json", required=True, type=Path, help="COCO instance annotations for evaluation")
    parser.add_argument("--val-images", required=True, type=Path, help="folder of the evaluation images")
    parser.add_argument("--output-dir", required=True, type=Path, help="where checkpoints and logs go")
    parser.add_argument("--max-iters", type=int, default=270_000, help="training iterations (official: 270000)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="global batch size, split evenly over the processes (official: 64)")
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW base learning rate (official: 5e-5)")
    parser.add_argument("--input-sizes", type=int_list, default=list(TRAIN_MIN_SIZES),
                        help="comma-separated shorter-side sizes sampled in training; the largest is used "
                             "for evaluation (default: official 416..640)")
    parser.add_argument("--max-size", type=int, default=TRAIN_MAX_SIZE, help="cap on the longer side (853)")
    parser.add_argument("--weights", type=Path,
                        help="initial weights (official .pth or ours); the class head is re-initialised "
                             "when the class count differs")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help=f"continue from OUTPUT_DIR/{LAST_CHECKPOINT} (model, optimiser, schedule, RNG)")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the files of the run already in OUTPUT_DIR and start afresh")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help=f"train on the images that pass the pre-check; the others are listed in "
                             f"OUTPUT_DIR/{SKIPPED_IMAGES}")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (torchrun: one GPU per process)")
    parser.add_argument("--num-classes", type=int,
                        help="classes of the model (default: the categories in --train-json)")
    parser.add_argument("--checkpoint-period", type=int, default=5000, help=f"iterations between {LAST_CHECKPOINT} writes")
    parser.add_argument("--eval-period", type=int, default=0, help="iterations between evaluations (0: at the end only)")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                        help="mixed precision of the forward pass (fp16: CUDA only, with loss scaling)")
    parser.add_argument("--channels-last", action="store_true",
                        help="keep weights and activations in NHWC layout: much faster on CPUs with oneDNN, "
                             "above all with --amp bf16")
    parser.add_argument("--clip-grad", type=float, default=0.0, help="clip the gradient norm to this (0: off)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="data-loading processes per training process")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order and augmentation")
    parser.add_argument("--log-period", type=int, default=20, help="iterations between metrics.jsonl records")
    # Advanced options, for experiments and tests.
    parser.add_argument("--warmup-iters", type=int, help="linear warm-up length (default: min(1000, 5%% of max-iters))")
    parser.add_argument("--lr-steps", type=int_list,
                        help="iterations where the lr drops x0.1 (default: official 210k/250k of 270k, scaled)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help=argparse.SUPPRESS)
    parser.add_argument("--crop-probability", type=float, default=CROP_PROBABILITY,
                        help="fraction of training images that get the random crop (official: 0.5)")
    parser.add_argument("--eval-batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-override", type=model_override, action="append", default=[], metavar="KEY=VALUE",
                        help="override a ModelConfig field, e.g. norm=frozen_bn (repeatable)")
    args = parser.parse_args(argv)
    for name in ("max_iters", "batch_size", "checkpoint_period", "log_period", "max_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    if args.eval_period < 0 or args.workers < 0 or args.clip_grad < 0:
        parser.error("--eval-period, --workers and --clip-grad must be >= 0")
    if max(args.input_sizes) >= args.max_size:   # torchvision's Resize needs max_size > size
        parser.error(f"--max-size {args.max_size} must be larger than the largest --input-sizes "
                     f"{max(args.input_sizes)}")
    return args


class StopSignal:
    """Remembers a SIGTERM/SIGINT so the loop can checkpoint at the end of the current iteration."""

    def __init__(self):
        self.signum: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt   # a second Ctrl-C stops at once
        self.signum = signum


def build_datasets(args, logger, is_main: bool):
    train_set = CocoInstanceDataset(args.train_json, args.train_images, build_train_transforms(
        args.input_sizes, args.max_size, crop_probability=args.crop_probability))
    val_set = CocoInstanceDataset(args.val_json, args.val_images)
    skipped = {}
    for what, dataset in (("training set", train_set), ("validation set", val_set)):
        problems = dataset.find_problems()
        if problems and not args.skip_bad_images:
            raise ValueError(dataset.describe_problems(what, problems) +
                             f"\n--skip-bad-images trains on the other images and lists these in {SKIPPED_IMAGES}")
        if problems:
            dataset.drop_images(p.image_id for p in problems)
            skipped[what] = [dataclasses.asdict(p) for p in problems]
            logger.warning(f"{what}: skipping {len(dataset.coco.imgs) - len(dataset)} of {len(dataset.coco.imgs)} "
                           f"images ({len(problems)} problem(s), listed in {args.output_dir / SKIPPED_IMAGES})")
    if skipped and is_main:
        (args.output_dir / SKIPPED_IMAGES).write_text(json.dumps(skipped, indent=1))
    if len(train_set) == 0:
        raise ValueError(f"{args.train_json} lists no images" + (" that pass the pre-check" if skipped else ""))
    unknown = sorted(set(train_set.label_to_category_id) - set(val_set.coco.cats))
    if unknown:
        raise ValueError(f"category ids {unknown} of {args.train_json} are not in {args.val_json}")
    return train_set, val_set


def class_names_for(train_set: CocoInstanceDataset, num_classes: int) -> list[str]:
    names = list(train_set.class_names)
    return names + [f"class_{i}" for i in range(len(names), num_classes)]


class Trainer:
    """One training run: builds everything from the arguments, then `train()` loops and finishes."""

    def __init__(self, args, ctx, logger):
        self.args, self.ctx, self.logger = args, ctx, logger
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        if args.batch_size % ctx.world_size:
            raise ValueError(f"--batch-size {args.batch_size} is not divisible by the {ctx.world_size} processes")
        per_rank_batch = args.batch_size // ctx.world_size

        train_set, val_set = build_datasets(args, logger, ctx.is_main)
        self.num_classes = args.num_classes or train_set.num_classes
        if self.num_classes < train_set.num_classes:
            raise ValueError(f"--num-classes {self.num_classes} is smaller than the {train_set.num_classes} "
                             f"categories of {args.train_json}")
        self.class_names = class_names_for(train_set, self.num_classes)
        self.label_to_category_id = list(train_set.label_to_category_id)
        # The evaluation size is recorded in the checkpoint, so predictors and the node use what it was trained for.
        overrides = {"min_size_test": max(args.input_sizes), "max_size_test": args.max_size,
                     **dict(args.model_override)}
        get_preset(args.preset)   # a clear error for an unknown preset before anything else
        self.model = build_model(args.preset, num_classes=self.num_classes, **overrides)
        logger.info(f"model {args.preset} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.1f} M "
                    f"parameters), {self.num_classes} classes: {', '.join(self.class_names)}; "
                    f"overrides {overrides or 'none'}")
        logger.info(f"training set {len(train_set)} images, validation set {len(val_set)} images; "
                    f"{ctx.world_size} process(es) on {ctx.device}, {per_rank_batch} images each per iteration")

        self.last_path = args.output_dir / LAST_CHECKPOINT
        resume_from = self.last_path if args.resume and self.last_path.is_file() else None
        if args.resume and resume_from is None:
            logger.warning(f"--resume: no {self.last_path} yet, starting from the beginning")
        if args.weights and resume_from is None:
            report = load_checkpoint(self.model, args.weights, reinit_class_head=True)
            skipped = (f"; re-initialised (class count differs): {', '.join(report.reinitialised)}"
                       if report.reinitialised else "")
            logger.info(f"initialised from {args.weights} ({report.layout} layout){skipped}")
        self.model.to(ctx.device, memory_format=self.memory_format)

        self.optimizer = build_optimizer(self.model, args.lr, weight_decay=args.weight_decay)
        warmup, steps = default_schedule(args.max_iters)
        warmup = warmup if args.warmup_iters is None else args.warmup_iters
        steps = steps if args.lr_steps is None else args.lr_steps
        self.scheduler = build_scheduler(self.optimizer, args.max_iters, warmup, steps)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=args.amp == "fp16")
        self.start_iter = 0
        if resume_from is not None:
            load_checkpoint(self.model, resume_from)
            state = load_training_state(resume_from, self.model, self.optimizer, self.scheduler, self.scaler)
            self.start_iter = int(state["iteration"])
            logger.info(f"resumed from {resume_from} at iteration {self.start_iter}")
        logger.info(f"AdamW lr {args.lr} weight decay {args.weight_decay}; warm-up {warmup} iterations, "
                    f"lr x0.1 at {list(steps)}; {args.max_iters} iterations; amp {args.amp}"
                    f"{', channels-last' if args.channels_last else ''}")

        self.network = self.model
        if ctx.distributed:
            self.network = DistributedDataParallel(
                self.model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        self.criterion = SparseInstCriterion()
        collate = PadWithPixelMean(self.model.config.pixel_mean)
        pin = ctx.device.type == "cuda"
        self.train_loader = DataLoader(
            SeededItems(train_set), collate_fn=collate, num_workers=args.workers, pin_memory=pin,
            batch_sampler=TrainBatchSampler(len(train_set), per_rank_batch, args.seed, self.start_iter),
            worker_init_fn=ignore_interrupts_in_worker)
        self.val_images = CocoImages(val_set)
        self.evaluator = CocoMaskEvaluator(val_set.coco, self.label_to_category_id)
        self.log = self.progress = None

    def checkpoint(self, iteration: int) -> None:
        save_training_checkpoint(self.last_path, self.model, self.optimizer, self.scheduler, self.scaler,
                                 iteration, self.class_names, train_args=_jsonable(vars(self.args)))

    def evaluate(self, iteration: int) -> dict:
        """Mask AP of the current weights through the predictor, at the size recorded for the model."""
        was_training = self.model.training
        config = self.model.config
        predictor = Predictor(self.model, min_size=config.min_size_test, max_size=config.max_size_test,
                              score_threshold=EVAL_SCORE_THRESHOLD, mask_threshold=MASK_THRESHOLD,
                              device=self.ctx.device, precision="fp32" if self.args.amp == "none" else self.args.amp)
        metrics = evaluate_predictor(predictor, self.val_images, self.evaluator,
                                     batch_size=self.args.eval_batch_size or 1, workers=self.args.workers,
                                     output_dir=self.args.output_dir / "inference" if self.ctx.is_main else None)
        self.model.train(was_training)
        if self.log is not None:
            self.log.write(iteration, prefix="val/", **metrics)
        self.logger.info(f"iteration {iteration}: mask AP {_percent(metrics['segm/AP'])}, "
                         f"AP50 {_percent(metrics['segm/AP50'])}")
        return metrics

    def train(self) -> int:
        """Returns the exit status: 0 when done, 128 + signal number when stopped by a signal."""
        stop = StopSignal()
        if self.ctx.is_main:
            from tqdm import tqdm
            self.log = MetricsLog(self.args.output_dir, self.start_iter)
            self.progress = tqdm(total=self.args.max_iters, initial=self.start_iter, desc="train",
                                 dynamic_ncols=True, smoothing=0.1, file=sys.stdout)
        try:
            finished = self.loop(stop)
            if not finished:
                name = signal.Signals(stop.signum).name if stop.signum else "a signal on another rank"
                self.logger.warning(f"stopped by {name}; {self.last_path} written, continue with --resume")
                return 128 + (stop.signum or signal.SIGTERM)
            self.finish()
            return 0
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.log is not None:
                self.log.close()

    def loop(self, stop: StopSignal) -> bool:
        """Iterates to --max-iters; False if a signal (on any rank) stopped it after a checkpoint."""
        args, ctx = self.args, self.ctx
        window_start, window_iter = time.perf_counter(), self.start_iter
        with loader_iterator(self.train_loader) as batches:
            for iteration in range(self.start_iter + 1, args.max_iters + 1):
                if any_across_ranks(torch.tensor([stop.signum is not None]))[0]:
                    self.checkpoint(iteration - 1)
                    return False
                images, targets = next(batches)
                images = images.to(ctx.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                targets = move_targets(targets, ctx.device)
                lr = self.optimizer.param_groups[0]["lr"]
                step = train_one_step(self.network, self.criterion, self.optimizer, self.scaler, images, targets,
                                      iteration=iteration, amp=args.amp, clip_grad=args.clip_grad)
                self.scheduler.step()

                if iteration % args.log_period == 0 or iteration == args.max_iters:
                    values = mean_across_ranks({"loss": step.total, **step.losses}, ctx.device)
                    now = time.perf_counter()
                    seconds = (now - window_start) / (iteration - window_iter)
                    window_start, window_iter = now, iteration
                    if self.log is not None:
                        extra = {"grad_norm": step.grad_norm} if step.grad_norm is not None else {}
                        self.log.write(iteration, prefix="train/", lr=lr, **values, **extra,
                                       seconds_per_iter=seconds)
                    if self.progress is not None:
                        self.progress.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in values.items()}
                                                  | {"lr": f"{lr:.1e}"}, refresh=False)
                if self.progress is not None:
                    self.progress.update(1)
                if iteration % args.checkpoint_period == 0 and iteration != args.max_iters:
                    self.checkpoint(iteration)
                if args.eval_period and iteration % args.eval_period == 0 and iteration != args.max_iters:
                    self.evaluate(iteration)
        return True

    def finish(self) -> None:
        """Final checkpoint, model_final.pth, evaluation, metrics.json and the curves plot."""
        args, out = self.args, self.args.output_dir
        final_iteration = max(self.start_iter, args.max_iters)
        self.checkpoint(final_iteration)
        replicas = replica_fingerprints(self.model)
        if self.ctx.is_main:
            if len(set(replicas)) > 1:
                raise RuntimeError(f"the {len(replicas)} DDP replicas ended with different weights: {replicas}")
            save_checkpoint(self.model, out / FINAL_MODEL, class_names=self.class_names, iteration=final_iteration,
                            label_to_category_id=self.label_to_category_id)
            self.logger.info(f"wrote {out / FINAL_MODEL}")
        metrics = self.evaluate(final_iteration)
        if self.ctx.is_main:
            summary = {**metrics, "iteration": final_iteration, "preset": args.preset,
                       "num_classes": self.num_classes, "replica_weight_sha256": replicas}
            (out / "metrics.json").write_text(json.dumps(summary, indent=2))
            plot = plot_curves(out / METRICS_JSONL, out / CURVES_PNG)
            self.logger.info(f"wrote {out / 'metrics.json'}" + (f" and {plot}" if plot else ""))


def replica_fingerprints(model: torch.nn.Module) -> list[str]:
    """SHA-256 of each rank's parameters (rank order): DDP must keep them bit-identical."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return gather_objects(digest.hexdigest())


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _jsonable(values: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def previous_run(output_dir: Path) -> list[str]:
    """The files of an earlier run in output_dir, which a new run would replace or mix with."""
    return [name for name in RUN_FILES if (output_dir / name).exists()]


def delete_run(output_dir: Path) -> None:
    """Deletes what a run writes into output_dir (RUN_OUTPUTS), so that a new run does not mix with it."""
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before anything writes into the folder (the logger creates log.txt, MetricsLog truncates metrics.jsonl).
    if args.output_dir.exists() and not args.output_dir.is_dir():
        print(f"error: --output-dir {args.output_dir} is a file, not a folder", file=sys.stderr)
        return 2
    previous = previous_run(args.output_dir)
    if previous and not (args.resume or args.overwrite):
        print(f"error: --output-dir {args.output_dir} holds a training run ({', '.join(previous)}); pass --resume "
              "to continue it or --overwrite to delete it and start afresh", file=sys.stderr)
        return 2
    ctx = init_distributed(args.device)
    if args.overwrite and ctx.is_main:
        delete_run(args.output_dir)
    logger = setup_logger(args.output_dir, ctx.rank)
    try:
        return Trainer(args, ctx, logger).train()
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        logger.error(f"error: {error}")
        return 1
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    sys.exit(main())
