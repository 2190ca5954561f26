"""COCO-format instance segmentation data: a torch Dataset over an annotation JSON and an image folder.

Category ids (arbitrary, often not contiguous) are mapped to contiguous labels 0..C-1 in ascending id
order, and back with label_to_category_id. Crowd annotations (iscrowd=1) are not training instances, as
in COCO practice; images without annotations are kept (they teach the model about background).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..model import padded_shape
from .transforms import remove_empty_instances

Transforms = Callable[[tv_tensors.Image, dict], tuple[torch.Tensor, dict]]


class CocoInstanceDataset(Dataset):
    """Items are (image, target): image float32 [3, H, W] RGB in 0..255 and target a dict with
    "labels" int64 [K] (contiguous), "masks" bool [K, H, W], "image_id" int and "orig_size" (h, w)
    of the image file. H, W are the sizes after the transforms (none: the file's size)."""

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike,
                 transforms: Transforms | None = None):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        self.coco = load_coco_annotations(self.annotation_file)
        self.image_ids = sorted(self.coco.imgs)
        self.label_to_category_id = sorted(self.coco.cats)
        self.category_id_to_label = {cat_id: label for label, cat_id in enumerate(self.label_to_category_id)}
        self.class_names = [self.coco.cats[cat_id]["name"] for cat_id in self.label_to_category_id]

    @property
    def num_classes(self) -> int:
        return len(self.label_to_category_id)

    def check_image_files(self, what: str = "dataset") -> None:
        """Fail before a long run, not hours into it, when image files listed in the annotations are missing."""
        missing = [self.coco.imgs[i]["file_name"] for i in self.image_ids
                   if not (self.image_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise FileNotFoundError(f"{what}: {len(missing)} image file(s) listed in {self.annotation_file} "
                                    f"are missing from {self.image_dir}: {shown}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image = self.read_image(image_id)                                        # [H, W, 3] uint8
        height, width = image.shape[:2]
        annotations = [ann for ann in self.coco.imgToAnns[image_id] if not ann.get("iscrowd", 0)]
        masks = np.zeros((len(annotations), height, width), dtype=bool)          # [K, H, W]
        for i, ann in enumerate(annotations):
            masks[i] = self.coco.annToMask(ann).astype(bool)
        labels = torch.tensor([self.category_id_to_label[ann["category_id"]] for ann in annotations],
                              dtype=torch.int64)
        target = {
            "labels": labels,
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "image_id": int(image_id),
            "orig_size": (int(info["height"]), int(info["width"])),
        }
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())   # [3, H, W]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        # Empty masks (degenerate polygons, or parts cropped away) are not instances.
        target = remove_empty_instances(target)
        return image.as_subclass(torch.Tensor).to(torch.float32), target

    def read_image(self, image_id: int) -> np.ndarray:
        """The image file of image_id as (H, W, 3) uint8 RGB, checked against the annotated size."""
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (image id {image_id} in {self.annotation_file})")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"could not decode image file {path}")
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"image file {path} is {image.shape[0]}x{image.shape[1]} but "
                             f"{self.annotation_file} says {info['height']}x{info['width']}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class CocoImages(Dataset):
    """The images of a `CocoInstanceDataset` as (image id, uint8 (H, W, 3) RGB) items, for evaluation
    through the predictor: decoded (in loader workers), not resized."""

    def __init__(self, dataset: CocoInstanceDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        image_id = self.dataset.image_ids[index]
        return int(image_id), self.dataset.read_image(image_id)


def load_coco_annotations(annotation_file: str | os.PathLike) -> COCO:
    """Reads and checks a COCO instance annotation file; any problem is a ValueError naming the file."""
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotation_file}")
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotation_file}: not valid JSON ({error})") from error
    problem = _find_problem(data)
    if problem:
        raise ValueError(f"{annotation_file}: invalid COCO instance annotations: {problem}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):   # createIndex prints progress
        coco.createIndex()
    return coco


def _find_problem(data: object) -> str | None:
    """What makes data unusable as COCO instance annotations, or None."""
    if not isinstance(data, dict):
        return f"top level must be an object, got {type(data).__name__}"
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            return f'missing or non-list "{key}"'
    images = {}
    for image in data["images"]:
        if not isinstance(image, dict) or any(key not in image for key in ("id", "file_name", "height", "width")):
            return f'image entry {image!r:.100} needs "id", "file_name", "height" and "width"'
        if image["id"] in images:
            return f"duplicate image id {image['id']}"
        images[image["id"]] = image
    category_ids = set()
    for category in data["categories"]:
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            return f'category entry {category!r:.100} needs "id" and "name"'
        if category["id"] in category_ids:
            return f"duplicate category id {category['id']}"
        category_ids.add(category["id"])
    if not category_ids:
        return "no categories"
    for ann in data["annotations"]:
        required = ("id", "image_id", "category_id", "segmentation")
        if not isinstance(ann, dict) or any(key not in ann for key in required):
            return f'annotation {ann!r:.100} needs "id", "image_id", "category_id" and "segmentation"'
        if ann["image_id"] not in images:
            return f"annotation {ann['id']} refers to unknown image id {ann['image_id']}"
        if ann["category_id"] not in category_ids:
            return f"annotation {ann['id']} refers to unknown category id {ann['category_id']}"
        image = images[ann["image_id"]]
        problem = _segmentation_problem(ann["segmentation"], image["height"], image["width"])
        if problem:
            return f"annotation {ann['id']}: {problem}"
    return None


def _segmentation_problem(segmentation: object, height: int, width: int) -> str | None:
    if isinstance(segmentation, list):   # polygons [[x0, y0, x1, y1, ...], ...]
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(isinstance(v, (int, float)) for v in polygon)):
                return "a polygon must be a list of at least 3 (x, y) number pairs"
        return None
    if isinstance(segmentation, dict):   # RLE, compressed (str counts) or not (list of ints)
        if list(segmentation.get("size", [])) != [height, width]:
            return f"RLE size {segmentation.get('size')} differs from the image size [{height}, {width}]"
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            if sum(counts) != height * width:
                return f"uncompressed RLE counts sum to {sum(counts)}, expected {height * width}"
        elif not isinstance(counts, str):
            return "RLE counts must be a string or a list of integers"
        return None
    return f"segmentation must be polygons (list) or RLE (dict), got {type(segmentation).__name__}"


def collate_batch(batch: list[tuple[torch.Tensor, dict]], size_divisibility: int = 32,
                  pad_value: float | Sequence[float] = 0.0) -> tuple[torch.Tensor, list[dict]]:
    """Stacks dataset items into images [B, 3, Hp, Wp] float32, padded at the right and bottom with
    `pad_value` (one value or one per channel) to the largest H and W rounded up to a multiple of
    size_divisibility, and a list of targets whose masks are zero-padded the same way to [K, Hp, Wp]; each
    target also gets "size" (h, w), the unpadded size.

    SparseInst models normalise inside, so training pads with the pixel mean (zero once normalised), as
    the official implementation pads the normalised image with zeros."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    padded_height, padded_width = padded_shape(max(image.shape[-2] for image, _ in batch),
                                               max(image.shape[-1] for image, _ in batch), size_divisibility)
    images = batch[0][0].new_empty((len(batch), 3, padded_height, padded_width))   # [B, 3, Hp, Wp]
    images[:] = torch.as_tensor(pad_value, dtype=images.dtype).reshape(-1, 1, 1)
    targets = []
    for i, (image, target) in enumerate(batch):
        height, width = image.shape[-2:]
        images[i, :, :height, :width] = image
        masks = target["masks"].new_zeros((target["masks"].shape[0], padded_height, padded_width))
        masks[:, :height, :width] = target["masks"]                                 # [K, Hp, Wp]
        targets.append({**target, "masks": masks, "size": (int(height), int(width))})
    return images, targets
