"""COCO mask AP of a predictor: run it on a dataset's images, score the results with pycocotools.

`evaluate_predictor` feeds the images to a `Predictor`, the very path the node runs (same resize, padding,
backend and post-processing), so the AP it reports is the AP of what the robot runs.
`CocoMaskEvaluator` collects the predictions, writes them as COCO results JSON and runs COCOeval("segm").

Works in a single process and under torch.distributed: every rank predicts its shard of the images and
calls evaluate(); predictions are gathered with all_gather_object, rank 0 runs COCOeval, and all ranks
return the same metrics. An image seen by several ranks counts once.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import CocoImages, load_coco_annotations
from ..inference import Predictor
from .distributed import get_rank, get_world_size
from .engine import ignore_interrupts_in_worker, loader_iterator

SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")   # the first six COCOeval.stats entries
RESULTS_FILE_NAME = "coco_instances_results.json"

ArrayLike = torch.Tensor | np.ndarray | Sequence


class CocoMaskEvaluator:
    """Accumulates per-image mask predictions and computes COCO segmentation AP against ground truth.

    label_to_category_id[label] is the COCO category id of contiguous label `label` (the dataset's
    attribute of the same name). Under torch.distributed, evaluate() is collective: call it on every rank.
    """

    def __init__(self, coco_gt: COCO | str | os.PathLike, label_to_category_id: Sequence[int]):
        self.coco_gt = coco_gt if isinstance(coco_gt, COCO) else load_coco_annotations(coco_gt)
        _complete_ground_truth(self.coco_gt)
        self.label_to_category_id = [int(cat_id) for cat_id in label_to_category_id]
        unknown = sorted(set(self.label_to_category_id) - set(self.coco_gt.cats))
        if unknown:
            raise ValueError(f"label_to_category_id has category ids {unknown} that the ground truth lacks")
        self.reset()

    def reset(self) -> None:
        # COCO results entries per evaluated image id (an empty list: evaluated, nothing predicted).
        self.predictions: dict[int, list[dict]] = {}

    def update(self, image_id: int, scores: ArrayLike, labels: ArrayLike, masks: ArrayLike) -> None:
        """Adds the predictions for one image: scores [K] float, labels [K] contiguous int, masks [K, h, w]
        bool at the original image size (h, w) of image_id. A second call for the same image replaces
        the first."""
        image_id = int(image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"image id {image_id} is not in the ground truth")
        scores, labels, masks = (_to_numpy(x) for x in (scores, labels, masks))
        height, width = self.coco_gt.imgs[image_id]["height"], self.coco_gt.imgs[image_id]["width"]
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise ValueError(f"masks for image {image_id} must be [K, {height}, {width}] (the original image "
                             f"size), got {list(masks.shape)}")
        if masks.dtype not in (np.bool_, np.uint8):
            raise ValueError(f"masks must be boolean (threshold the mask probabilities first), got {masks.dtype}")
        if not len(scores) == len(labels) == len(masks):
            raise ValueError(f"scores, labels and masks disagree on the number of instances: "
                             f"{len(scores)}, {len(labels)}, {len(masks)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.label_to_category_id)):
            raise ValueError(f"labels must be in [0, {len(self.label_to_category_id)}), got {labels.tolist()}")
        # pycocotools encodes column-major uint8 arrays of shape [h, w, K].
        rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0))) if len(masks) else []
        self.predictions[image_id] = [
            {"image_id": image_id, "category_id": self.label_to_category_id[int(label)],
             "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
             "score": float(score)}
            for score, label, rle in zip(scores.tolist(), labels.tolist(), rles)]

    def evaluate(self, output_dir: str | os.PathLike | None = None) -> dict[str, float]:
        """Gathers the predictions of all ranks, runs COCOeval on rank 0 (printing its summary and a compact
        table) and returns, on every rank, {"segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm/APm",
        "segm/APl", "segm/AP-<class name>", ...} as fractions; NaN where COCO leaves a value undefined
        (e.g. APs without small ground-truth objects). If output_dir is given, rank 0 writes the results
        JSON there."""
        predictions = self.predictions
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, predictions)
            predictions = {}
            for rank_predictions in gathered:
                for image_id, entries in rank_predictions.items():
                    predictions.setdefault(image_id, entries)     # the first rank's copy of an image
        metrics = None
        if not distributed or dist.get_rank() == 0:
            image_ids = sorted(predictions)
            results = [entry for image_id in image_ids for entry in predictions[image_id]]
            if output_dir is not None:
                output_dir = Path(output_dir)
                output_dir.mkdir(parents=True, exist_ok=True)
                (output_dir / RESULTS_FILE_NAME).write_text(json.dumps(results))
            metrics = self._run_cocoeval(results, image_ids)
        if distributed:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics

    def _run_cocoeval(self, results: list[dict], image_ids: list[int]) -> dict[str, float]:
        if not image_ids:
            print("CocoMaskEvaluator: no image was passed to update(); evaluating all ground-truth images")
            image_ids = sorted(self.coco_gt.imgs)
        with contextlib.redirect_stdout(io.StringIO()):   # loadRes, evaluate and accumulate log progress
            # loadRes adds fields to the entries it gets, hence the copies.
            coco_dt = self.coco_gt.loadRes([dict(r) for r in results]) if results else _empty_results(self.coco_gt)
            coco_eval = COCOeval(self.coco_gt, coco_dt, iouType="segm")
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
        print(f"COCO mask evaluation on {len(image_ids)} images, {len(results)} predictions:")
        coco_eval.summarize()
        metrics = {f"segm/{name}": _undefined_to_nan(value)
                   for name, value in zip(SUMMARY_METRICS, coco_eval.stats)}
        # precision: [iou thresholds, recall thresholds, categories, area ranges, max detections]
        precision = coco_eval.eval["precision"]
        for k, cat_id in enumerate(coco_eval.params.catIds):
            class_precision = precision[:, :, k, 0, -1]           # all areas, 100 detections
            class_precision = class_precision[class_precision > -1]
            ap = float(class_precision.mean()) if class_precision.size else math.nan
            metrics[f"segm/AP-{self.coco_gt.cats[cat_id]['name']}"] = ap
        print(format_metrics_table(metrics))
        return metrics


def _complete_ground_truth(coco_gt: COCO) -> None:
    """Fill in what COCOeval reads but COCO files may omit: an annotation's `area` (its mask's pixel count,
    as COCO defines it for segmentation) and `iscrowd` (0)."""
    for ann in coco_gt.anns.values():
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(mask_utils.area(coco_gt.annToRLE(ann)))


def format_metrics_table(metrics: dict[str, float]) -> str:
    """A compact table, in percent: the summary metrics on one row, then AP per class."""
    summary_keys = [f"segm/{name}" for name in SUMMARY_METRICS]
    lines = [" | ".join(f"{name:>6}" for name in SUMMARY_METRICS),
             " | ".join(f"{100 * metrics[key]:6.2f}" for key in summary_keys)]
    per_class = [(key[len("segm/AP-"):], value) for key, value in metrics.items() if key.startswith("segm/AP-")]
    if per_class:
        width = max(len(name) for name, _ in per_class)
        lines.append("per-class AP:")
        lines += [f"  {name:<{width}} {100 * value:6.2f}" for name, value in per_class]
    return "\n".join(lines)


def _empty_results(coco_gt: COCO) -> COCO:
    """A results COCO with no detections (loadRes cannot take an empty list)."""
    coco_dt = COCO()
    coco_dt.dataset = {"images": copy.deepcopy(coco_gt.dataset["images"]),
                       "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _undefined_to_nan(value: float) -> float:
    return math.nan if value < 0 else float(value)   # COCOeval marks undefined entries with -1


class RankShard(torch.utils.data.Sampler):
    """Indices rank::world_size of a dataset, in order, without the repeats DistributedSampler pads with."""

    def __init__(self, dataset_size: int):
        self.indices = list(range(get_rank(), dataset_size, get_world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def evaluate_predictor(predictor: Predictor, images: CocoImages, evaluator: CocoMaskEvaluator, *,
                       batch_size: int = 1, workers: int = 0, output_dir: str | os.PathLike | None = None,
                       progress: bool = False) -> dict[str, float | None]:
    """COCO mask AP of `predictor` on `images` (collective under DDP: each rank predicts its shard).

    Images are decoded by `workers` loader processes and given to the predictor `batch_size` at a time
    (images of one padded size share a forward pass; the results equal batch size 1's up to float rounding).
    Metrics that COCO leaves undefined are None.
    """
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, sampler=RankShard(len(images)),
                                         collate_fn=list, num_workers=workers,
                                         worker_init_fn=ignore_interrupts_in_worker)
    evaluator.reset()
    with loader_iterator(loader) as batches:
        if progress:
            from tqdm import tqdm
            batches = tqdm(batches, total=len(loader), desc="evaluate", leave=False, dynamic_ncols=True)
        for batch in batches:
            image_ids, arrays = zip(*batch)
            for image_id, result in zip(image_ids, predictor(list(arrays))):
                evaluator.update(image_id, result.scores, result.labels, result.masks)
    metrics = evaluator.evaluate(output_dir)
    return {name: (None if isinstance(value, float) and math.isnan(value) else value)
            for name, value in metrics.items()}
