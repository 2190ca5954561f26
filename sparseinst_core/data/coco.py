"""COCO-format instance segmentation data: a torch Dataset over an annotation JSON and an image folder.

Category ids (arbitrary, often not contiguous) are mapped to contiguous labels 0..C-1 in ascending id
order, and back with label_to_category_id. Crowd annotations (iscrowd=1) are not training instances, as
in COCO practice; images without annotations are kept (they teach the model about background).
`check` / `find_problems` look at every image header and annotation before a long run, so that a bad file
is reported up front with all the others instead of stopping training hours in.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..model import padded_shape
from .transforms import remove_empty_instances

Transforms = Callable[[tv_tensors.Image, dict], tuple[torch.Tensor, dict]]
MAX_LISTED_PROBLEMS = 10   # problems shown in an error; all of them go to the list that skipping writes
MAX_RLE_CHUNKS = 12        # 60 bits: pycocotools keeps run lengths in a C long
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageProblem:
    """Why one image of a dataset cannot be trained or evaluated on."""

    image_id: int
    file_name: str
    problem: str


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

    def find_problems(self) -> list[ImageProblem]:
        """Everything that would stop training or evaluation on an image, for every image, in image id order:
        sizes, file names that leave the image folder, missing, empty or undecodable files, a file size
        other than the annotated one, and invalid polygons or RLEs. Only image headers are read, not the
        pixels: about 0.7 ms per image on a busy 2-core machine, so COCO's 118k images take a minute or two."""
        image_dir = self.image_dir.resolve()
        problems = []
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            image_problem = _image_problem(info, image_dir)
            found = [image_problem] if image_problem else [   # annotations are checked against a valid size
                f"annotation {ann.get('id')}: {problem}" for ann in self.coco.imgToAnns[image_id]
                if (problem := _segmentation_problem(ann["segmentation"], info["height"], info["width"]))]
            problems += [ImageProblem(int(image_id), str(info["file_name"]), problem) for problem in found]
        return problems

    def describe_problems(self, what: str, problems: Sequence[ImageProblem]) -> str:
        """A summary line, then the first MAX_LISTED_PROBLEMS problems one per line with image id and file name."""
        images = len({p.image_id for p in problems})
        lines = [f"{what}: {images} of the {len(self.coco.imgs)} images of {self.annotation_file} cannot be used "
                 f"({len(problems)} problem(s); image folder {self.image_dir}):"]
        lines += [f"  image {p.image_id} {p.file_name!r}: {p.problem}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        return "\n".join(lines)

    def check(self, what: str = "dataset") -> None:
        """Fail before a long run, not hours into it: a ValueError listing every problem `find_problems` finds."""
        problems = self.find_problems()
        if problems:
            raise ValueError(self.describe_problems(what, problems))

    def drop_images(self, image_ids: Iterable[int]) -> None:
        """Leave these images out (e.g. those with problems); the annotations themselves are kept."""
        dropped = set(image_ids)
        self.image_ids = [i for i in self.image_ids if i not in dropped]

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
        path, problem = _image_path(self.image_dir.resolve(), info["file_name"])
        if problem:
            raise ValueError(f"image {image_id} of {self.annotation_file}: {problem}")
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
    return None


def _image_problem(info: dict, image_dir: Path) -> str | None:
    """What is wrong with one image entry and its file (`image_dir` resolved), or None."""
    height, width = info["height"], info["width"]
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
        return f"height and width must be positive integers, got {height!r:.20} and {width!r:.20}"
    path, problem = _image_path(image_dir, info["file_name"])
    if problem:
        return problem
    if not path.is_file():
        return "file not found" if not path.exists() else "not a regular file"
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    size = _decoded_size(path)
    if size is None:
        return "not an image file that can be decoded"
    if size != (height, width):
        return f"the file is {size[0]}x{size[1]} but the annotations say {height}x{width}"
    return None


def _image_path(image_dir: Path, file_name: object) -> tuple[Path, str | None]:
    """The file of an image entry, and why it may not be read: a name that leaves `image_dir` (resolved),
    through "..", an absolute path or a symbolic link, could make training read any file."""
    if not isinstance(file_name, str) or not file_name:
        return image_dir, f"file_name must be a non-empty string, got {file_name!r:.40}"
    relative = Path(file_name)
    if relative.is_absolute() or ".." in relative.parts:
        return image_dir, "the file name leaves the image folder (absolute or with '..')"
    path = (image_dir / relative).resolve()
    if not path.is_relative_to(image_dir):
        return path, f"the file name leaves the image folder (a link to {path})"
    return path, None


def _decoded_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of the image as `read_image` will decode it (OpenCV applies the EXIF orientation),
    from the header; None if it cannot be decoded. OpenCV, the reader training uses, must know the format;
    PIL reads the size and checks what it can without decoding (e.g. PNG chunk checksums); files PIL
    refuses are decoded with OpenCV to decide."""
    if not cv2.haveImageReader(str(path)):
        return None
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = _exif_orientation(image)
            image.verify()
        return (width, height) if orientation in (5, 6, 7, 8) else (height, width)   # 90 degree turns
    except Exception:   # any failure of PIL on a damaged or unusual file: let OpenCV decide
        decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if decoded is None else decoded.shape[:2]


def _exif_orientation(image: Image.Image) -> int:
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(EXIF_ORIENTATION, 1)


def _segmentation_problem(segmentation: object, height: int, width: int) -> str | None:
    """Polygons and RLEs are checked here because pycocotools decodes them without bounds checks: a bad one
    can write outside its buffer and kill the process, or draw for hours."""
    if isinstance(segmentation, list):   # polygons [[x0, y0, x1, y1, ...], ...]
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(_is_number(v) for v in polygon)):
                return "a polygon must be a list of at least 3 (x, y) pairs of finite numbers"
            xs, ys = polygon[0::2], polygon[1::2]
            if not (-width <= min(xs) and max(xs) <= 2 * width and -height <= min(ys) and max(ys) <= 2 * height):
                return (f"a polygon reaches ({min(xs):g}..{max(xs):g}, {min(ys):g}..{max(ys):g}), far outside "
                        f"the {width}x{height} image")
        return None
    if isinstance(segmentation, dict):   # RLE, compressed (str counts) or not (list of ints)
        if segmentation.get("size") not in ([height, width], (height, width)):
            return f"RLE size {segmentation.get('size')} differs from the image size [{height}, {width}]"
        counts = segmentation.get("counts")
        if isinstance(counts, str):
            counts = _decode_rle_counts(counts)
            if isinstance(counts, str):
                return counts
        elif not (isinstance(counts, list) and all(_is_int(c) for c in counts)):
            return "RLE counts must be a string or a list of integers"
        if any(c < 0 for c in counts):
            return "RLE counts include a negative run length"
        if sum(counts) != height * width:
            return f"RLE counts sum to {sum(counts)}, expected {height * width} (height x width)"
        return None
    return f"segmentation must be polygons (list) or RLE (dict), got {type(segmentation).__name__}"


def _decode_rle_counts(text: str) -> list[int] | str:
    """The run lengths of a compressed RLE counts string (pycocotools' rleFrString), or what is wrong with it.

    Each number is a little-endian series of 5-bit chunks in characters '0' + 0..63 (bit 5: more chunks
    follow; bit 4 of the last chunk: negative); from the third number on, it is a difference to the number
    two before.
    """
    counts, value, chunks = [], 0, 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return f"RLE counts contain {char!r}, which is not in the encoding's alphabet ('0'..'o')"
        value |= (code & 0x1F) << (5 * chunks)
        chunks += 1
        if chunks > MAX_RLE_CHUNKS:
            return f"an RLE run length takes more than {MAX_RLE_CHUNKS} characters"
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << (5 * chunks)   # sign extension
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        value, chunks = 0, 0
    if chunks:
        return "RLE counts end in the middle of a number"
    return counts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
