"""The synthetic shapes dataset: in-memory scenes, and the COCO files written by the generator."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sparseinst_core.data.synthetic import (
    CLASS_HUE_BAND, DEMO_STYLE, SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES, encode_uncompressed_rle, generate_synthetic_dataset,
    mask_to_polygons, render_annotated_scene, render_dataset_scene, render_scene,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATOR_ARGS = dict(num_train=8, num_val=3, seed=5, image_size=128, image_format="png",
                      empty_fraction=0.25, crowd_fraction=0.9, rle_fraction=0.3)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("shapes")
    generate_synthetic_dataset(output, **GENERATOR_ARGS)
    return output


def test_render_scene_returns_image_visible_masks_and_labels():
    image, masks, labels = render_scene(np.random.default_rng(0), 96, 128, min_instances=3, max_instances=3)
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    assert masks.shape == (len(labels), 96, 128) and masks.dtype == bool
    assert 1 <= len(labels) <= 3 and labels.dtype == np.int64
    assert all(0 <= label < len(SYNTHETIC_CLASSES) for label in labels)
    assert masks.reshape(len(masks), -1).any(axis=1).all()
    # Visible parts of different instances never share a pixel.
    assert masks.sum(axis=0).max() == 1


def test_render_scene_draws_only_requested_classes():
    rng = np.random.default_rng(1)
    labels = np.concatenate([render_scene(rng, 64, 64, class_names=["star", "hexagon"])[2] for _ in range(10)])
    assert set(labels.tolist()) <= {SYNTHETIC_CLASSES.index("star"), SYNTHETIC_CLASSES.index("hexagon")}
    with pytest.raises(ValueError, match="subset"):
        render_scene(rng, 64, 64, class_names=["dodecahedron"])


def test_render_scene_is_deterministic_for_a_seed():
    first = render_scene(np.random.default_rng(42), 64, 80)
    second = render_scene(np.random.default_rng(42), 64, 80)
    other = render_scene(np.random.default_rng(43), 64, 80)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_shape_sizes_set_the_diameter_range():
    def mean_area(shape_sizes):
        rng = np.random.default_rng(4)
        areas = [masks.sum(axis=(1, 2)).mean() for masks in (
            render_scene(rng, 128, 128, class_names=["circle"], max_instances=1, shape_sizes=shape_sizes)[1]
            for _ in range(10))]
        return float(np.mean(areas))

    # A circle of diameter d covers about pi d^2 / 4 pixels (less where the border cuts it).
    small, large = mean_area((0.1, 0.1)), mean_area((0.4, 0.4))
    assert 0.8 * np.pi * 6.4 ** 2 < small < 1.1 * np.pi * 6.4 ** 2
    assert 0.7 * np.pi * 25.6 ** 2 < large < 1.1 * np.pi * 25.6 ** 2
    with pytest.raises(ValueError, match="shape_sizes"):
        render_scene(np.random.default_rng(0), 64, 64, shape_sizes=(0.5, 0.2))


def test_class_colours_put_each_class_in_its_own_hue_band():
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(12):
        image, masks, labels = render_scene(rng, 96, 96, **DEMO_STYLE)
        for mask, label in zip(masks, labels):
            mean_rgb = np.clip(image[mask].mean(axis=0), 0, 255).astype(np.uint8)[None, None]
            hue = 2.0 * cv2.cvtColor(mean_rgb, cv2.COLOR_RGB2HSV)[0, 0, 0]          # degrees
            centre = label * 360.0 / len(SYNTHETIC_CLASSES)
            distance = min(abs(hue - centre), 360 - abs(hue - centre))
            assert distance <= CLASS_HUE_BAND + 6, (SYNTHETIC_CLASSES[label], hue)   # + rounding and noise
            seen.add(int(label))
    assert len(seen) == len(SYNTHETIC_CLASSES)


def test_later_shapes_occlude_earlier_ones_only_partly():
    # Many shapes on a small canvas force overlaps; every instance stays at least partly visible.
    rng = np.random.default_rng(3)
    for _ in range(5):
        scene = render_annotated_scene(rng, 64, 64, min_instances=6, max_instances=6)
        assert scene.masks.reshape(len(scene.masks), -1).sum(axis=1).min() > 0


def test_polygons_trace_the_mask():
    _, masks, _ = render_scene(np.random.default_rng(7), 128, 128)
    for mask in masks:
        polygons = mask_to_polygons(mask)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 128, 128))).astype(bool)
        np.testing.assert_array_equal(decoded, mask)


def test_uncompressed_rle_round_trips_through_pycocotools():
    mask = np.zeros((7, 5), bool)
    mask[0, 0] = mask[3:6, 1:4] = True
    rle = encode_uncompressed_rle(mask)
    assert rle["size"] == [7, 5] and sum(rle["counts"]) == 35
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 7, 5)).astype(bool)
    np.testing.assert_array_equal(decoded, mask)


def test_generator_writes_coco_files_with_non_contiguous_category_ids(dataset_dir):
    for split, count in (("train", 8), ("val", 3)):
        data = json.loads((dataset_dir / "annotations" / f"{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == list(SYNTHETIC_CATEGORY_IDS)
        assert [c["name"] for c in data["categories"]] == list(SYNTHETIC_CLASSES)
        assert len(data["images"]) == count
        for image in data["images"]:
            assert (dataset_dir / split / image["file_name"]).is_file()
    train = json.loads((dataset_dir / "annotations" / "train.json").read_text())
    val = json.loads((dataset_dir / "annotations" / "val.json").read_text())
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}


def test_generator_uses_polygons_rle_crowd_and_empty_images(dataset_dir):
    data = json.loads((dataset_dir / "annotations" / "train.json").read_text())
    annotations = data["annotations"]
    assert any(isinstance(a["segmentation"], list) for a in annotations)
    assert any(isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], str)
               for a in annotations)
    crowd = [a for a in annotations if a["iscrowd"]]
    assert crowd and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)
    annotated = {a["image_id"] for a in annotations}
    assert any(image["id"] not in annotated for image in data["images"])


def test_generator_annotations_decode_to_the_visible_pixels(dataset_dir):
    coco = COCO(str(dataset_dir / "annotations" / "train.json"))
    for index, image_id in enumerate(sorted(coco.imgs)):
        scene = render_dataset_scene(GENERATOR_ARGS["seed"], "train", index, GENERATOR_ARGS["image_size"],
                                     empty_fraction=GENERATOR_ARGS["empty_fraction"],
                                     crowd_fraction=GENERATOR_ARGS["crowd_fraction"])
        file_image = cv2.imread(str(dataset_dir / "train" / coco.imgs[image_id]["file_name"]))
        np.testing.assert_array_equal(cv2.cvtColor(file_image, cv2.COLOR_BGR2RGB), scene.image)   # PNG: lossless
        annotations = coco.imgToAnns[image_id]
        instances = [a for a in annotations if not a["iscrowd"]]
        crowds = [a for a in annotations if a["iscrowd"]]
        assert len(instances) == len(scene.masks) and len(crowds) == len(scene.crowd_masks)
        for ann, mask, label in [*zip(instances, scene.masks, scene.labels),
                                 *zip(crowds, scene.crowd_masks, scene.crowd_labels)]:
            decoded = coco.annToMask(ann).astype(bool)
            assert ann["category_id"] == SYNTHETIC_CATEGORY_IDS[label]
            np.testing.assert_array_equal(decoded, mask)
            assert ann["area"] == pytest.approx(decoded.sum())
            assert ann["bbox"] == pytest.approx(mask_utils.toBbox(mask_utils.encode(
                np.asfortranarray(decoded.astype(np.uint8)))).tolist())


def test_generator_is_deterministic_for_a_seed(tmp_path):
    args = dict(GENERATOR_ARGS, num_train=2, num_val=1)
    generate_synthetic_dataset(tmp_path / "a", **args)
    generate_synthetic_dataset(tmp_path / "b", **args)
    generate_synthetic_dataset(tmp_path / "c", **dict(args, seed=args["seed"] + 1))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 + 1 + 2
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    assert ((tmp_path / "a" / "annotations" / "train.json").read_bytes()
            != (tmp_path / "c" / "annotations" / "train.json").read_bytes())


def test_command_line_writes_the_dataset(tmp_path):
    subprocess.run([sys.executable, str(REPO_ROOT / "training" / "make_synthetic_dataset.py"),
                    "--output", str(tmp_path), "--num-train", "2", "--num-val", "1", "--seed", "0",
                    "--image-size", "96", "--classes", "circle", "star"], check=True, capture_output=True)
    data = json.loads((tmp_path / "annotations" / "val.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["circle", "star"]
    assert [c["id"] for c in data["categories"]] == [1, 7]
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 2
