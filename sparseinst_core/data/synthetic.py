"""A synthetic, learnable instance-segmentation dataset of coloured shapes, written in COCO format.

Scenes have a textured background (smooth noise, a gradient or stripes) and 1-6 shapes of distinct
classes, drawn one after another so that later shapes partly cover earlier ones; every annotation
describes the visible part only. Category ids are deliberately not contiguous (1, 3, 5, ...) so that
the id <-> label mapping of the data pipeline is exercised. Everything is deterministic for a seed:
each image draws from its own generator seeded with (seed, split, index). The drawing pieces (shape_mask,
shape_colour, render_background, add_sensor_noise) also draw the moving scenes of rgbd_sequences.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# Ordered by category id, so contiguous label i is SYNTHETIC_CLASSES[i] when all classes are used.
SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "ellipse", "hexagon")
SYNTHETIC_CATEGORY_IDS = (1, 3, 5, 7, 11, 13)

SHAPE_SIZES = (0.08, 0.45)      # default range of shape diameters, as fractions of the shorter side
MIN_VISIBLE_FRACTION = 0.4      # a placement is rejected if it hides more than 60% of an earlier shape
MIN_INSTANCE_PIXELS = 64
MIN_COLOUR_DISTANCE = 80.0      # RGB distance between a shape and the background under it
PLACEMENT_ATTEMPTS = 30
# The scenes of training/benchmark_train.py, hence of the shipped demo model: image sources and demos draw
# theirs in this style so that the model sees what it was trained on.
DEMO_STYLE = {"shape_sizes": (0.15, 0.5), "class_colours": True}
CLASS_HUE_BAND = 20.0           # with class_colours: hue = class centre (360 / classes apart) +- this, degrees
ELLIPSE_ASPECTS = (0.35, 0.6)   # range of an ellipse's minor / major axis ratio


@dataclass
class SyntheticScene:
    """One rendered scene: image (H, W, 3) uint8 RGB, visible instance masks (K, H, W) bool, labels (K,)
    int64 indexing SYNTHETIC_CLASSES, and crowd regions (groups of tiny shapes annotated as one region
    with iscrowd=1, as COCO does): crowd_masks (G, H, W) bool, crowd_labels (G,) int64."""
    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    crowd_masks: np.ndarray
    crowd_labels: np.ndarray


def render_scene(rng: np.random.Generator, height: int, width: int,
                 class_names: Sequence[str] = SYNTHETIC_CLASSES, min_instances: int = 1,
                 max_instances: int = 6, **style) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one random scene in memory (for demos and image sources); `style` is shape_sizes and
    class_colours as in render_annotated_scene (DEMO_STYLE: the scenes the demo model was trained on).

    Returns image (H, W, 3) uint8 RGB, masks (K, H, W) bool of the visible parts, labels (K,) int64
    indexing SYNTHETIC_CLASSES. K can be smaller than requested when shapes do not fit.
    """
    scene = render_annotated_scene(rng, height, width, class_names, min_instances, max_instances, **style)
    return scene.image, scene.masks, scene.labels


def render_annotated_scene(rng: np.random.Generator, height: int, width: int,
                           class_names: Sequence[str] = SYNTHETIC_CLASSES, min_instances: int = 1,
                           max_instances: int = 6, crowd_probability: float = 0.0,
                           shape_sizes: tuple[float, float] = SHAPE_SIZES,
                           class_colours: bool = False) -> SyntheticScene:
    """Renders one scene with its instance and crowd annotations (see SyntheticScene). Shape diameters
    are drawn log-uniformly from shape_sizes, as fractions of the shorter image side. Shapes get random
    colours, or with class_colours a hue from their class's own band (see CLASS_HUE_BAND)."""
    if height < 32 or width < 32:
        raise ValueError(f"image size must be at least 32x32, got {height}x{width}")
    if not 0 < shape_sizes[0] <= shape_sizes[1] <= 1:
        raise ValueError(f"shape_sizes must be fractions 0 < min <= max <= 1, got {tuple(shape_sizes)}")
    if not 0 <= min_instances <= max_instances:
        raise ValueError(f"need 0 <= min_instances <= max_instances, got {min_instances}, {max_instances}")
    labels_allowed = _class_labels(class_names)

    image = render_background(rng, height, width)
    layers: list[tuple[np.ndarray, int, bool]] = []   # (full mask, label, is_crowd), bottom to top

    if rng.random() < crowd_probability:
        crowd_label = int(rng.choice(labels_allowed))
        crowd_mask = _crowd_mask(rng, height, width, crowd_label)
        _paint(rng, image, crowd_mask, crowd_label if class_colours else None)
        layers.append((crowd_mask, crowd_label, True))

    num_instances = int(rng.integers(min_instances, max_instances + 1))
    for _ in range(num_instances):
        for _ in range(PLACEMENT_ATTEMPTS):
            label = int(rng.choice(labels_allowed))
            diameter = _sample_diameter(rng, min(height, width), shape_sizes)
            shape_mask = _shape_mask(rng, height, width, label, diameter)
            if shape_mask.sum() >= MIN_INSTANCE_PIXELS and _keeps_earlier_visible(shape_mask, layers):
                _paint(rng, image, shape_mask, label if class_colours else None)
                layers.append((shape_mask, label, False))
                break

    image = add_sensor_noise(rng, image)
    visible = _visible_masks([mask for mask, _, _ in layers])
    instances = [(m, lab) for m, (_, lab, crowd) in zip(visible, layers) if not crowd and m.sum() > 0]
    crowds = [(m, lab) for m, (_, lab, crowd) in zip(visible, layers) if crowd and m.sum() > 0]
    return SyntheticScene(image, *_stack(instances, height, width), *_stack(crowds, height, width))


def generate_synthetic_dataset(output_dir: str | Path, num_train: int, num_val: int, seed: int = 0,
                               image_size: int = 320, class_names: Sequence[str] = SYNTHETIC_CLASSES,
                               image_format: str = "jpg", empty_fraction: float = 0.05,
                               crowd_fraction: float = 0.1, rle_fraction: float = 0.25,
                               shape_sizes: tuple[float, float] = SHAPE_SIZES,
                               class_colours: bool = False) -> dict[str, Path]:
    """Writes output_dir/{train,val}/*.{jpg,png} and output_dir/annotations/{train,val}.json.

    Images have their longer side equal to image_size and the shorter one in [0.75, 1] of it.
    empty_fraction of the images have no shapes; crowd_fraction of them get one iscrowd=1 region;
    rle_fraction of the instances are stored as compressed RLE instead of polygons (instances whose
    visible part has holes always are, because COCO polygons cannot express holes). Shape diameters are
    drawn log-uniformly from shape_sizes (fractions of the shorter image side); class_colours gives each
    class its own hue band, so colour tells the classes apart as well as shape.
    Returns {"train_images", "train_annotations", "val_images", "val_annotations"} paths.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got num_train={num_train}, num_val={num_val}")
    _class_labels(class_names)
    output_dir = Path(output_dir)
    (output_dir / "annotations").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    first_image_id = 1
    for split, num_images in (("train", num_train), ("val", num_val)):
        image_dir = output_dir / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(num_images):
            scene = render_dataset_scene(seed, split, index, image_size, class_names, empty_fraction, crowd_fraction,
                                         shape_sizes, class_colours)
            height, width = scene.image.shape[:2]
            image_id = first_image_id + index
            file_name = f"{image_id:08d}.{image_format}"
            _write_image(image_dir / file_name, scene.image)
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            encoding_rng = np.random.default_rng([seed, _split_seed(split), index, 1])
            for mask, label in zip(scene.masks, scene.labels):
                as_rle = encoding_rng.random() < rle_fraction
                annotations.append(_instance_annotation(mask, label, image_id, as_rle))
            for mask, label in zip(scene.crowd_masks, scene.crowd_labels):
                annotations.append(_crowd_annotation(mask, label, image_id))
        for annotation_id, annotation in enumerate(annotations, start=1):
            annotation["id"] = annotation_id
        coco = {
            "info": {"description": f"synthetic shapes ({split}), seed {seed}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": SYNTHETIC_CATEGORY_IDS[label], "name": SYNTHETIC_CLASSES[label],
                            "supercategory": "shape"} for label in _class_labels(class_names)],
        }
        annotation_file = output_dir / "annotations" / f"{split}.json"
        annotation_file.write_text(json.dumps(coco))
        paths[f"{split}_images"] = image_dir
        paths[f"{split}_annotations"] = annotation_file
        first_image_id += num_images   # image ids are unique across splits, as in COCO
    return paths


def render_dataset_scene(seed: int, split: str, index: int, image_size: int = 320,
                         class_names: Sequence[str] = SYNTHETIC_CLASSES, empty_fraction: float = 0.05,
                         crowd_fraction: float = 0.1,
                         shape_sizes: tuple[float, float] = SHAPE_SIZES,
                         class_colours: bool = False) -> SyntheticScene:
    """The scene behind image `index` of `split` in generate_synthetic_dataset (same arguments), so any
    image and its annotations can be re-created in memory. Each image has its own generator, seeded
    with (seed, split, index)."""
    rng = np.random.default_rng([seed, _split_seed(split), index])
    height, width = _sample_image_size(rng, image_size)
    empty = rng.random() < empty_fraction
    return render_annotated_scene(rng, height, width, class_names, min_instances=0 if empty else 1,
                                  max_instances=0 if empty else 6,
                                  crowd_probability=0.0 if empty else crowd_fraction, shape_sizes=shape_sizes,
                                  class_colours=class_colours)


def encode_uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a (H, W) mask: run lengths over column-major pixels, starting with 0s.
    pycocotools only produces the compressed form; COCO stores crowd regions in this one."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    boundaries = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a (H, W) mask as COCO polygons [x0, y0, x1, y1, ...] (pixel (i, j) spans
    [j, j + 1] x [i, i + 1]). Holes are not representable (see _has_holes).

    Contours through the centres of the boundary pixels would rasterise half a pixel too small, so they
    are traced on the mask upsampled 2x, a quarter pixel inside the true outline: pycocotools then
    decodes them back to the same pixels.
    """
    upsampled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Sub-pixel index k has its centre at (k + 0.5) / 2 in original pixel coordinates.
    return [((contour.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for contour in contours if len(contour) >= 3]


def _class_labels(class_names: Sequence[str]) -> list[int]:
    unknown = [name for name in class_names if name not in SYNTHETIC_CLASSES]
    if unknown or not class_names:
        raise ValueError(f"class_names must be a non-empty subset of {SYNTHETIC_CLASSES}, got {list(class_names)}")
    return sorted({SYNTHETIC_CLASSES.index(name) for name in class_names})


def _split_seed(split: str) -> int:
    return zlib.crc32(split.encode())   # stable across Python runs, unlike hash()


def _sample_image_size(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    shorter = int(round(image_size * rng.uniform(0.75, 1.0)))
    return (shorter, image_size) if rng.random() < 0.5 else (image_size, shorter)


def _sample_diameter(rng: np.random.Generator, shorter_side: int, shape_sizes: tuple[float, float]) -> float:
    # Log-uniform, so small and large shapes are equally common.
    low, high = np.log(shape_sizes[0] * shorter_side), np.log(shape_sizes[1] * shorter_side)
    return float(np.exp(rng.uniform(low, high)))


def _shape_mask(rng: np.random.Generator, height: int, width: int, label: int, diameter: float) -> np.ndarray:
    """Full (H, W) bool mask of one random shape; the centre is kept inside the image so at most a small part
    of the shape is cut by the border."""
    radius = diameter / 2
    centre = np.array([rng.uniform(radius * 0.5, width - radius * 0.5),
                       rng.uniform(radius * 0.5, height - radius * 0.5)])
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(*ELLIPSE_ASPECTS) if SYNTHETIC_CLASSES[label] == "ellipse" else 1.0
    return shape_mask(height, width, label, centre, radius, angle, aspect)


def shape_mask(height: int, width: int, label: int, centre: Sequence[float], radius: float, angle: float,
               aspect: float = 1.0) -> np.ndarray:
    """(H, W) bool mask of the shape of class `label` (indexing SYNTHETIC_CLASSES) centred at (x, y) pixels,
    `radius` pixels to its outer vertices, turned by `angle` radians; an ellipse's minor axis is `aspect`
    times its major one (ELLIPSE_ASPECTS in generated scenes)."""
    centre = np.asarray(centre, dtype=np.float64)
    name = SYNTHETIC_CLASSES[label]
    mask = np.zeros((height, width), np.uint8)
    if name == "circle":
        cv2.circle(mask, _int_point(centre), int(round(radius)), 1, thickness=-1)
        return mask.astype(bool)
    if name == "ellipse":
        axes = (int(round(radius)), int(round(radius * aspect)))
        cv2.ellipse(mask, _int_point(centre), axes, float(np.degrees(angle)), 0, 360, 1, thickness=-1)
        return mask.astype(bool)
    if name == "star":
        # 5 outer and 5 inner vertices, alternating.
        radii = np.tile([radius, radius * 0.45], 5)
        angles = angle + np.arange(10) * np.pi / 5
    else:
        num_vertices = {"square": 4, "triangle": 3, "hexagon": 6}[name]
        radii = np.full(num_vertices, radius)
        angles = angle + np.arange(num_vertices) * 2 * np.pi / num_vertices
    vertices = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)   # (V, 2) x, y
    cv2.fillPoly(mask, [np.round(vertices).astype(np.int32)], 1)
    return mask.astype(bool)


def _crowd_mask(rng: np.random.Generator, height: int, width: int, label: int) -> np.ndarray:
    """A cluster of 5-12 tiny shapes of one class (below the instance size range) in one region."""
    shorter = min(height, width)
    region = 0.3 * shorter
    corner = np.array([rng.uniform(0, width - region), rng.uniform(0, height - region)])
    mask = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(5, 13))):
        diameter = rng.uniform(0.03, 0.05) * shorter
        tiny = _shape_mask(rng, int(region), int(region), label, diameter)
        x, y = _int_point(corner)
        mask[y:y + tiny.shape[0], x:x + tiny.shape[1]] |= tiny[:height - y, :width - x]
    return mask


def _int_point(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0])), int(round(point[1]))


def _keeps_earlier_visible(new_mask: np.ndarray, layers: list[tuple[np.ndarray, int, bool]]) -> bool:
    """True if, with new_mask on top, every earlier instance keeps MIN_VISIBLE_FRACTION of its area."""
    covered = new_mask.copy()
    for mask, _, crowd in reversed(layers):
        if not crowd:
            area = mask.sum()
            if (mask & ~covered).sum() < MIN_VISIBLE_FRACTION * area:
                return False
        covered |= mask
    return True


def _visible_masks(layers: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each layer (bottom to top): its mask minus everything drawn later."""
    visible = []
    covered = np.zeros_like(layers[0]) if layers else None
    for mask in reversed(layers):
        visible.append(mask & ~covered)
        covered = covered | mask
    return visible[::-1]


def _stack(items: list[tuple[np.ndarray, int]], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        return np.zeros((0, height, width), bool), np.zeros((0,), np.int64)
    return np.stack([mask for mask, _ in items]), np.array([label for _, label in items], np.int64)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 texture: smooth colour noise, a linear gradient, or stripes."""
    kind = rng.integers(3)
    if kind == 0:
        cells = rng.uniform(0, 255, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.float32)
        background = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        position = xs * np.cos(angle) + ys * np.sin(angle)                     # (H, W)
        if kind == 1:
            weight = (position - position.min()) / max(float(np.ptp(position)), 1.0)
        else:
            period = rng.uniform(0.05, 0.2) * min(height, width)
            weight = 0.5 + 0.5 * np.sin(2 * np.pi * position / period)
        background = colours[0] + weight[..., None] * (colours[1] - colours[0])   # (H, W, 3)
    return np.clip(background, 0, 255).astype(np.uint8)


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, label: int | None = None) -> None:
    """Fills mask with a solid colour that stands out from what it covers, with a mild shading. The colour
    is random, or (label given) of random saturation and brightness in the class's hue band."""
    under = image[mask].astype(np.float32).mean(axis=0)
    candidates = [shape_colour(rng, label) for _ in range(20)]
    distances = [float(np.linalg.norm(colour - under)) for colour in candidates]
    far_enough = [colour for colour, distance in zip(candidates, distances) if distance >= MIN_COLOUR_DISTANCE]
    if far_enough:
        colour = far_enough[0]
    elif label is None:
        colour = 255.0 - under   # the complement is always far enough from a mean colour
    else:
        colour = candidates[int(np.argmax(distances))]   # keep the class's hue
    ys, xs = np.nonzero(mask)
    shading = 1.0 + 0.15 * (ys - ys.mean()) / max(float(np.ptp(ys)), 1.0)      # brighter towards the bottom
    image[ys, xs] = np.clip(colour[None] * shading[:, None], 0, 255).astype(np.uint8)


def shape_colour(rng: np.random.Generator, label: int | None) -> np.ndarray:
    """RGB float colour: uniform, or with a hue in the band of `label` (see CLASS_HUE_BAND)."""
    if label is None:
        return rng.uniform(0, 255, size=3)
    hue = (label * 360.0 / len(SYNTHETIC_CLASSES) + rng.uniform(-CLASS_HUE_BAND, CLASS_HUE_BAND)) % 360.0
    hsv = np.array([[[hue / 2, rng.uniform(0.45, 1.0) * 255, rng.uniform(0.4, 1.0) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def add_sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A camera's pixel noise on a uint8 image: Gaussian, 4 grey levels standard deviation."""
    noisy = image.astype(np.float32) + 4.0 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _has_holes(mask: np.ndarray) -> bool:
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def _instance_annotation(mask: np.ndarray, label: int, image_id: int, as_rle: bool) -> dict:
    polygons = [] if as_rle or _has_holes(mask) else mask_to_polygons(mask)
    if polygons:
        segmentation = polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, *mask.shape))
    else:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])}
    # Area and box of the stored segmentation, i.e. what a COCO reader decodes.
    return {"image_id": image_id, "category_id": SYNTHETIC_CATEGORY_IDS[label], "segmentation": segmentation,
            "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 0}


def _crowd_annotation(mask: np.ndarray, label: int, image_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"image_id": image_id, "category_id": SYNTHETIC_CATEGORY_IDS[label],
            "segmentation": encode_uncompressed_rle(mask), "area": float(mask_utils.area(rle)),
            "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 1}


def _write_image(path: Path, image: np.ndarray) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params):
        raise RuntimeError(f"could not write image {path}")
