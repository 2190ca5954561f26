"""CocoInstanceDataset and collate_batch on small COCO files written by the tests."""
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

from sparseinst_core.data.coco import CocoInstanceDataset, collate_batch
from sparseinst_core.data.synthetic import encode_uncompressed_rle, generate_synthetic_dataset
from sparseinst_core.data.transforms import build_train_transforms

HEIGHT, WIDTH = 40, 50
CATEGORIES = [{"id": 7, "name": "cup"}, {"id": 2, "name": "bicycle"}, {"id": 90, "name": "toothbrush"}]


def rectangle(top, left, bottom, right):
    """(HEIGHT, WIDTH) bool mask of rows top..bottom-1 and columns left..right-1."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top:bottom, left:right] = True
    return mask


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [HEIGHT, WIDTH]}


@pytest.fixture
def coco_dir(tmp_path):
    """Image 11: a polygon (bicycle), an RLE (cup) and a crowd region (cup); image 12: no annotations."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = 200                     # red in RGB; OpenCV writes BGR, so swap on write
    cv2.imwrite(str(image_dir / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(image_dir / "b.png"), np.zeros((30, 20, 3), np.uint8))
    annotations = [
        # Polygon with corners on pixel boundaries: covers rows 5..14, columns 10..19 exactly.
        {"id": 1, "image_id": 11, "category_id": 2, "iscrowd": 0, "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},
        {"id": 2, "image_id": 11, "category_id": 7, "iscrowd": 0,
         "segmentation": compressed_rle(rectangle(20, 30, 35, 45))},
        {"id": 3, "image_id": 11, "category_id": 7, "iscrowd": 1,
         "segmentation": encode_uncompressed_rle(rectangle(0, 0, 4, 4))},
    ]
    data = {"images": [{"id": 11, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
                       {"id": 12, "file_name": "b.png", "height": 30, "width": 20}],
            "annotations": annotations, "categories": CATEGORIES}
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(data))
    return annotation_file, image_dir, data


def write_annotations(path, data):
    path.write_text(json.dumps(data))
    return path


def test_category_ids_map_to_contiguous_labels_in_ascending_id_order(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    dataset = CocoInstanceDataset(annotation_file, image_dir)
    assert dataset.label_to_category_id == [2, 7, 90]
    assert dataset.category_id_to_label == {2: 0, 7: 1, 90: 2}
    assert dataset.class_names == ["bicycle", "cup", "toothbrush"]
    assert dataset.num_classes == 3 and len(dataset) == 2


def test_item_decodes_polygon_and_rle_and_leaves_out_crowd(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    image, target = CocoInstanceDataset(annotation_file, image_dir)[0]
    assert image.dtype == torch.float32 and image.shape == (3, HEIGHT, WIDTH)
    assert image[0].eq(200).all() and image[1:].eq(0).all()        # RGB order, 0..255
    assert target["image_id"] == 11 and target["orig_size"] == (HEIGHT, WIDTH)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 1]
    assert target["masks"].dtype == torch.bool and target["masks"].shape == (2, HEIGHT, WIDTH)
    np.testing.assert_array_equal(target["masks"][0].numpy(), rectangle(5, 10, 15, 20))
    np.testing.assert_array_equal(target["masks"][1].numpy(), rectangle(20, 30, 35, 45))


def test_image_without_annotations_is_kept_with_no_instances(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    image, target = CocoInstanceDataset(annotation_file, image_dir)[1]
    assert image.shape == (3, 30, 20)
    assert target["image_id"] == 12
    assert target["labels"].shape == (0,) and target["masks"].shape == (0, 30, 20)


def test_degenerate_polygon_is_not_an_instance(coco_dir, tmp_path):
    annotation_file, image_dir, data = coco_dir
    data["annotations"].append({"id": 4, "image_id": 11, "category_id": 90, "iscrowd": 0,
                                "segmentation": [[3, 3, 3, 3, 3, 3]]})
    _, target = CocoInstanceDataset(write_annotations(tmp_path / "degenerate.json", data), image_dir)[0]
    assert target["labels"].tolist() == [0, 1] and len(target["masks"]) == 2


def test_corrupt_json_is_a_value_error_naming_the_file(coco_dir, tmp_path):
    _, image_dir, data = coco_dir
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data)[:-20])
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        CocoInstanceDataset(broken, image_dir)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d.pop("categories"), 'missing or non-list "categories"'),
    (lambda d: d["annotations"][0].update(category_id=5), "unknown category id 5"),
    (lambda d: d["annotations"][0].update(image_id=99), "unknown image id 99"),
    (lambda d: d["images"][0].pop("height"), '"height"'),
])
def test_invalid_annotations_are_a_value_error_saying_what_is_wrong(coco_dir, tmp_path, corrupt, message):
    _, image_dir, data = coco_dir
    corrupt(data)
    with pytest.raises(ValueError, match=message):
        CocoInstanceDataset(write_annotations(tmp_path / "invalid.json", data), image_dir)


def test_missing_image_file_is_a_file_not_found_error_naming_the_path(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    (image_dir / "b.png").unlink()
    dataset = CocoInstanceDataset(annotation_file, image_dir)
    with pytest.raises(FileNotFoundError, match=r"images[/\\]b\.png"):
        dataset[1]
    with pytest.raises(ValueError, match=r"validation set: 1 of the 2 images .*\n  image 12 'b.png': file not found$"):
        dataset.check("validation set")   # up front, before a long run


def test_image_size_differing_from_the_annotations_is_a_value_error(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    cv2.imwrite(str(image_dir / "b.png"), np.zeros((31, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="31x20"):
        CocoInstanceDataset(annotation_file, image_dir)[1]


def test_collate_pads_images_and_masks_to_a_multiple_of_32(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    dataset = CocoInstanceDataset(annotation_file, image_dir)
    images, targets = collate_batch([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert torch.equal(images[0, :, :HEIGHT, :WIDTH], dataset[0][0])
    assert images[0, :, HEIGHT:].eq(0).all() and images[0, :, :, WIDTH:].eq(0).all()
    assert images[1, :, 30:].eq(0).all() and images[1, :, :, 20:].eq(0).all()
    assert targets[0]["size"] == (HEIGHT, WIDTH) and targets[1]["size"] == (30, 20)
    assert targets[0]["masks"].shape == (2, 64, 64) and targets[1]["masks"].shape == (0, 64, 64)
    assert torch.equal(targets[0]["masks"][:, :HEIGHT, :WIDTH], dataset[0][1]["masks"])
    assert not targets[0]["masks"][:, HEIGHT:].any() and not targets[0]["masks"][:, :, WIDTH:].any()
    assert targets[0]["labels"].tolist() == [0, 1] and targets[0]["image_id"] == 11


def test_collate_pads_images_with_a_value_per_channel(coco_dir):
    annotation_file, image_dir, _ = coco_dir
    dataset = CocoInstanceDataset(annotation_file, image_dir)
    images, _ = collate_batch([dataset[1]], pad_value=(1.0, 2.0, 3.0))
    assert images[0, :, :30, :20].equal(dataset[1][0])
    for channel, value in enumerate((1.0, 2.0, 3.0)):
        assert images[0, channel, 30:].eq(value).all() and images[0, channel, :, 20:].eq(value).all()


def test_synthetic_dataset_loads_in_batches_with_training_transforms(tmp_path):
    paths = generate_synthetic_dataset(tmp_path, num_train=4, num_val=0, seed=0, image_size=96)
    transforms = build_train_transforms(min_sizes=(64, 96), max_size=128, crop_size_range=(48, 80),
                                        crop_pre_resize_sizes=(80,))
    dataset = CocoInstanceDataset(paths["train_annotations"], paths["train_images"], transforms)
    torch.manual_seed(0)
    for images, targets in DataLoader(dataset, batch_size=2, collate_fn=collate_batch):
        assert images.shape[0] == 2 and images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
        for image, target in zip(images, targets):
            height, width = target["size"]
            assert min(height, width) in (64, 96) and max(height, width) <= 128
            assert target["masks"].shape[1:] == images.shape[2:]
            assert len(target["labels"]) == len(target["masks"])
            assert target["masks"].flatten(1).any(dim=1).all()          # no empty instance survives
            assert ((target["labels"] >= 0) & (target["labels"] < dataset.num_classes)).all()


# ------------------------------------------------------------------ the pre-check before a long run
def good_png(path, height=HEIGHT, width=WIDTH):
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def bad_files_dataset(root):
    """One image for each kind of bad file or annotation, two good ones; returns (dataset, expected problems)."""
    image_dir = root / "images"
    image_dir.mkdir()
    outside = root / "outside.png"
    good_png(outside)
    good_png(image_dir / "good.png")
    (image_dir / "empty.png").write_bytes(b"")
    good_png(image_dir / "taller.png", height=HEIGHT + 1)
    (image_dir / "text.png").write_text("not an image")
    good_png(image_dir / "cut.png")
    (image_dir / "cut.png").write_bytes((image_dir / "cut.png").read_bytes()[:-30])   # the PNG loses its end
    (image_dir / "link.png").symlink_to(outside)
    for name in ("bad_rle.png", "bad_polygon.png", "negative_rle.png", "far_polygon.png", "good2.png"):
        good_png(image_dir / name)
    names = ["good.png", "empty.png", "taller.png", "text.png", "cut.png", "missing.png", "../../etc/passwd",
             str(outside), "link.png", "bad_rle.png", "bad_polygon.png", "negative_rle.png", "far_polygon.png",
             "good2.png"]
    images = [{"id": i, "file_name": name, "height": HEIGHT, "width": WIDTH} for i, name in enumerate(names, 1)]
    rle = compressed_rle(rectangle(2, 2, 9, 9))
    segmentations = {10: {"counts": "ab!@#", "size": [HEIGHT, WIDTH]},
                     11: [[1, 2, float("nan"), 4, 5, 6]],
                     12: {"counts": [HEIGHT * WIDTH + 5, -5], "size": [HEIGHT, WIDTH]},
                     13: [[0, 0, 10, 0, 1e12, 10]]}
    annotations = [{"id": 100 + i, "image_id": i, "category_id": 7, "iscrowd": 0,
                    "segmentation": segmentations.get(i, rle)} for i in range(1, len(names) + 1)]
    annotation_file = write_annotations(root / "instances.json",
                                        {"images": images, "annotations": annotations, "categories": CATEGORIES})
    expected = {
        2: "the file is empty (0 bytes)",
        3: f"the file is {HEIGHT + 1}x{WIDTH} but the annotations say {HEIGHT}x{WIDTH}",
        4: "not an image file that can be decoded",
        5: "not an image file that can be decoded",
        6: "file not found",
        7: "the file name leaves the image folder (absolute or with '..')",
        8: "the file name leaves the image folder (absolute or with '..')",
        9: f"the file name leaves the image folder (a link to {outside.resolve()})",
        10: "annotation 110: RLE counts contain '!', which is not in the encoding's alphabet ('0'..'o')",
        11: "annotation 111: a polygon must be a list of at least 3 (x, y) pairs of finite numbers",
        12: "annotation 112: RLE counts include a negative run length",
        13: f"annotation 113: a polygon reaches (0..1e+12, 0..10), far outside the {WIDTH}x{HEIGHT} image",
    }
    return CocoInstanceDataset(annotation_file, image_dir), expected


def test_check_finds_every_bad_file_and_annotation_before_training(tmp_path):
    dataset, expected = bad_files_dataset(tmp_path)
    problems = dataset.find_problems()
    assert {p.image_id: p.problem for p in problems} == expected
    assert len(problems) == len(expected)
    assert {p.image_id: p.file_name for p in problems}[7] == "../../etc/passwd"


def test_check_lists_the_count_and_the_first_problems_with_ids_and_file_names(tmp_path):
    dataset, expected = bad_files_dataset(tmp_path)
    with pytest.raises(ValueError) as error:
        dataset.check("training set")
    lines = str(error.value).splitlines()
    assert lines[0] == (f"training set: 12 of the 14 images of {dataset.annotation_file} cannot be used "
                        f"(12 problem(s); image folder {dataset.image_dir}):")
    assert lines[1] == "  image 2 'empty.png': the file is empty (0 bytes)"
    assert lines[7] == "  image 8 " + repr(dataset.coco.imgs[8]["file_name"]) + ": " + expected[8]
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "  ... and 2 more"


def test_dropped_images_are_left_out_of_the_items(tmp_path):
    dataset, expected = bad_files_dataset(tmp_path)
    dataset.drop_images(p.image_id for p in dataset.find_problems())
    assert dataset.image_ids == [1, 14] and len(dataset) == 2
    assert dataset.find_problems() == []
    assert [dataset[i][1]["image_id"] for i in range(2)] == [1, 14]


def test_reading_an_image_outside_the_folder_is_refused_even_without_the_check(tmp_path):
    dataset, _ = bad_files_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"image 7 of .*instances.json: the file name leaves the image folder"):
        dataset.read_image(7)


@pytest.mark.parametrize("counts, problem", [
    ("4l", "RLE counts end in the middle of a number"),           # 'l' (48 + 60) has the "more chunks" bit
    ("0 5", "' ', which is not in the encoding's alphabet"),
    ("o" * 13 + "0", "more than 12 characters"),
    ("40", "RLE counts sum to 4, expected 2000"),                  # runs of 4 and 0: well-formed, too short
])
def test_invalid_compressed_rle_strings_are_problems(coco_dir, tmp_path, counts, problem):
    annotation_file, image_dir, data = coco_dir
    data["annotations"][1]["segmentation"]["counts"] = counts
    dataset = CocoInstanceDataset(write_annotations(tmp_path / "rle.json", data), image_dir)
    assert [(p.image_id, problem in p.problem) for p in dataset.find_problems()] == [(11, True)]


def test_rle_strings_decode_to_the_run_lengths_pycocotools_stores(tmp_path):
    from sparseinst_core.data.coco import _decode_rle_counts
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((HEIGHT, WIDTH)) < rng.random()
        mask[rng.integers(0, HEIGHT):, rng.integers(0, WIDTH):] ^= True   # long runs too
        text = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
        assert _decode_rle_counts(text) == encode_uncompressed_rle(mask)["counts"]


def test_image_size_follows_the_exif_orientation_as_opencv_decodes_it(tmp_path):
    from PIL import Image
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6   # stored 50 wide and 40 high, shown turned by 90 degrees
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(image_dir / "turned.jpg", exif=exif)
    images = [{"id": 1, "file_name": "turned.jpg", "height": WIDTH, "width": HEIGHT},
              {"id": 2, "file_name": "turned.jpg", "height": HEIGHT, "width": WIDTH}]
    annotation_file = write_annotations(tmp_path / "exif.json",
                                        {"images": images, "annotations": [], "categories": CATEGORIES})
    dataset = CocoInstanceDataset(annotation_file, image_dir)
    assert dataset.read_image(1).shape == (WIDTH, HEIGHT, 3)
    assert [(p.image_id, p.problem) for p in dataset.find_problems()] == [
        (2, f"the file is {WIDTH}x{HEIGHT} but the annotations say {HEIGHT}x{WIDTH}")]
