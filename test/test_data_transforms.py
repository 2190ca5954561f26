"""Training and test transforms: sizes, crop, flip, and masks that stay aligned with the image."""
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from sparseinst_core.data.transforms import (
    RandomSizeCrop, ResizeShortestEdge, build_train_transforms, remove_empty_instances,
)


def painted_sample(height, width, boxes):
    """An image whose red channel is 200 inside each (top, left, bottom, right) box and 0 elsewhere,
    and the boxes as masks: transforms that keep them aligned keep mask == (red > 100)."""
    masks = torch.zeros((len(boxes), height, width), dtype=torch.bool)
    for mask, (top, left, bottom, right) in zip(masks, boxes):
        mask[top:bottom, left:right] = True
    image = torch.zeros((3, height, width), dtype=torch.uint8)
    image[0] = masks.any(dim=0).to(torch.uint8) * 200
    target = {"masks": tv_tensors.Mask(masks), "labels": torch.arange(len(boxes)), "image_id": 1,
              "orig_size": (height, width)}
    return tv_tensors.Image(image), target


def test_random_horizontal_flip_moves_image_and_mask_together():
    transforms = build_train_transforms(min_sizes=(60,), max_size=1000, crop_probability=0.0)
    image, target = painted_sample(60, 80, [(10, 0, 30, 20)])       # a box at the left edge
    flipped_box = torch.zeros(60, 80, dtype=torch.bool)
    flipped_box[10:30, 60:] = True
    torch.manual_seed(0)
    outcomes = []
    for _ in range(10):
        out_image, out_target = transforms(image, target)
        mask = out_target["masks"][0]
        assert torch.equal(mask, out_image[0] > 100)
        outcomes.append("flipped" if torch.equal(mask, flipped_box) else
                        "kept" if torch.equal(mask, target["masks"][0]) else "other")
    assert "flipped" in outcomes and "kept" in outcomes and "other" not in outcomes


@pytest.mark.parametrize("seed", range(4))
def test_training_transforms_keep_masks_aligned_with_the_image(seed):
    transforms = build_train_transforms(min_sizes=(96, 128), max_size=200, crop_probability=0.5,
                                        crop_pre_resize_sizes=(100, 120), crop_size_range=(60, 90))
    image, target = painted_sample(90, 120, [(5, 5, 50, 60), (40, 70, 85, 115)])
    torch.manual_seed(seed)
    out_image, out_target = transforms(image, target)
    assert out_image.dtype == torch.float32 and out_image.max() <= 255
    masks = out_target["masks"]
    assert masks.dtype == torch.bool and masks.shape[1:] == out_image.shape[1:]
    painted = out_image[0] > 100
    union = masks.any(dim=0)
    # Nearest-neighbour masks and antialiased images may disagree within a pixel of the mask border only.
    dilated = F.max_pool2d(union[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    eroded = -F.max_pool2d(-union[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    border = dilated & ~eroded
    assert not ((painted ^ union) & ~border).any()
    assert eroded.any()


def test_training_resize_picks_a_listed_shorter_side_and_caps_the_longer_side():
    transforms = build_train_transforms(min_sizes=(64, 96), max_size=150, crop_probability=0.0)
    image, target = painted_sample(50, 100, [(0, 0, 10, 10)])
    torch.manual_seed(0)
    sizes = {tuple(transforms(image, target)[0].shape[1:]) for _ in range(20)}
    # Shorter side 64 -> 64x128; 96 would make the longer side 192 > 150, so it is capped to 75x150.
    assert sizes == {(64, 128), (75, 150)}


def test_training_resize_follows_the_predictors_size_rule():
    """One rule for every path: the training resize and the predictor compute sizes with resized_shape."""
    from sparseinst_core.model import resized_shape
    resize = ResizeShortestEdge([640], 853)
    for (height, width), expected in [((480, 640), (640, 853)), ((100, 400), (213, 853)), ((64, 48), (853, 640)),
                                      ((333, 517), (640, 853))]:
        image, target = painted_sample(height, width, [(0, 0, 10, 10)])
        out_image, out_target = resize(image, target)
        assert tuple(out_image.shape[1:]) == resized_shape(height, width, 640, 853)
        assert tuple(out_target["masks"].shape[1:]) == tuple(out_image.shape[1:])
        assert tuple(out_image.shape[1:]) == expected or (height, width) == (333, 517)


def test_random_size_crop_samples_sizes_in_the_range_clipped_to_the_image():
    crop = RandomSizeCrop(384, 600)
    image, target = painted_sample(300, 1000, [(0, 0, 10, 10)])
    torch.manual_seed(0)
    for _ in range(10):
        out_image, out_target = crop(image, target)
        height, width = out_image.shape[1:]
        assert height == 300 and 384 <= width <= 600                 # height clipped to the image
        assert out_target["masks"].shape[1:] == (height, width)
    with pytest.raises(ValueError):
        RandomSizeCrop(600, 384)


def test_instances_that_vanish_in_a_crop_are_dropped_with_their_labels():
    crop = RandomSizeCrop(40, 40)
    # Instance 0 is a small box in the top-left corner, instance 1 fills the image.
    image, target = painted_sample(100, 100, [(0, 0, 5, 5), (0, 0, 100, 100)])
    torch.manual_seed(0)
    kept = []
    for _ in range(10):
        _, cropped = crop(image, target)
        cleaned = remove_empty_instances(cropped)
        assert len(cleaned["masks"]) == len(cleaned["labels"])
        assert cleaned["masks"].flatten(1).any(dim=1).all()
        kept.append(cleaned["labels"].tolist())
    assert [1] in kept                       # the corner box was cropped away, its label went with it
    assert all(labels in ([1], [0, 1]) for labels in kept)
