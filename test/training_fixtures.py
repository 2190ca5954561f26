"""Shared helpers of the training tests: tiny datasets and running the real entry scripts."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sparseinst_core.data.synthetic import (
    SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES, generate_synthetic_dataset, render_annotated_scene,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"
EVALUATE_SCRIPT = REPO / "training" / "evaluate.py"


def make_dataset(root: Path, num_train: int = 8, num_val: int = 4, image_size: int = 64) -> dict[str, Path]:
    """The product's synthetic generator at a tiny size."""
    return generate_synthetic_dataset(root, num_train, num_val, seed=0, image_size=image_size, image_format="png")


def make_fixed_count_dataset(root: Path, num_images: int, size: int = 64, instances: int = 2) -> dict[str, Path]:
    """Square images with exactly `instances` shapes each, as train and val splits of the same images.

    Equal instance counts per image keep per-rank mean losses (objectness, pixel BCE) equal to the
    single-process mean, and square images keep every batch the same padded size, so a 2-process run
    can be compared with a 1-process run exactly.
    """
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    seed = 0
    while len(images) < num_images:
        scene = render_annotated_scene(np.random.default_rng(seed), size, size, min_instances=instances,
                                       max_instances=instances)
        seed += 1
        if len(scene.labels) != instances:
            continue
        image_id = len(images) + 1
        cv2.imwrite(str(image_dir / f"{image_id}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": size, "width": size})
        for mask, label in zip(scene.masks, scene.labels):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": SYNTHETIC_CATEGORY_IDS[label],
                "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 0})
    categories = [{"id": cat_id, "name": name} for cat_id, name in zip(SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES)]
    annotation_file = root / "instances.json"
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return {"train_annotations": annotation_file, "train_images": image_dir,
            "val_annotations": annotation_file, "val_images": image_dir}


def train_args(data: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for a tiny CPU run; `extra` overrides (argparse keeps the last value)."""
    return ["--preset", "r18_giam",
            "--train-json", str(data["train_annotations"]), "--train-images", str(data["train_images"]),
            "--val-json", str(data["val_annotations"]), "--val-images", str(data["val_images"]),
            "--output-dir", str(output_dir), "--device", "cpu", "--input-sizes", "64", "--max-size", "96",
            "--batch-size", "2", "--lr", "1e-4", "--log-period", "1", "--workers", "0", *extra]


def script_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def run_script(script: Path, args: list[str], timeout: float = 120, torchrun_procs: int = 0
               ) -> subprocess.CompletedProcess:
    command = [sys.executable, str(script), *args]
    if torchrun_procs:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun_procs),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=script_env(), cwd=REPO)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_losses(output_dir: Path) -> dict[int, dict[str, float]]:
    """Per-iteration training losses from OUT/metrics.jsonl."""
    return {r["iteration"]: {k: v for k, v in r.items() if k.startswith("loss")}
            for r in read_jsonl(output_dir / "metrics.jsonl") if "loss" in r}


def with_bad_images(data: dict[str, Path], root: Path) -> tuple[dict[str, Path], dict[int, str]]:
    """A copy of data's training split in which four images are bad the way users' data gets bad: an empty
    file, a file of another size than annotated, an invalid RLE string, and a file name that leaves the
    image folder (to a real image). Returns the data and {image id: the problem the pre-check reports}."""
    image_dir = root / "train"
    shutil.copytree(data["train_images"], image_dir)
    coco = json.loads(data["train_annotations"].read_text())
    images = sorted(coco["images"], key=lambda image: image["id"])
    annotated = {ann["image_id"] for ann in coco["annotations"]}
    empty, resized, escaping = images[:3]
    bad_rle = next(image for image in images[3:] if image["id"] in annotated)
    (image_dir / empty["file_name"]).write_bytes(b"")
    resized["height"] += 8
    shutil.copy(image_dir / escaping["file_name"], root / "outside.png")
    escaping["file_name"] = "../outside.png"
    ann = next(ann for ann in coco["annotations"] if ann["image_id"] == bad_rle["id"])
    ann["segmentation"] = {"counts": "#not an RLE", "size": [bad_rle["height"], bad_rle["width"]]}
    annotation_file = root / "train.json"
    annotation_file.write_text(json.dumps(coco))
    problems = {
        empty["id"]: "the file is empty (0 bytes)",
        resized["id"]: f"the file is {resized['height'] - 8}x{resized['width']} but the annotations say "
                       f"{resized['height']}x{resized['width']}",
        escaping["id"]: "the file name leaves the image folder",
        bad_rle["id"]: f"annotation {ann['id']}: RLE counts contain '#'",
    }
    return {**data, "train_annotations": annotation_file, "train_images": image_dir}, problems
