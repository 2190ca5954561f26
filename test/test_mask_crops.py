"""MaskCrops: masks stored inside boxes, and the full masks, boxes and per-instance crops made from them."""
import numpy as np
import torch

from sparseinst_core.inference.mask_crops import MaskCrops


def random_masks(count=6, shape=(30, 40), seed=0):
    """(count, H, W) bool: random rectangles with holes, and one empty mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, *shape), dtype=bool)
    for mask in masks[:-1]:
        y0, x0 = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        mask[y0:y0 + rng.integers(2, 12), x0:x0 + rng.integers(2, 15)] = True
        mask &= rng.random(shape) < 0.8
    return masks


def two_crop_instance():
    """Instance 0 as two overlapping crops (their union is the mask), instance 1 empty (no crop)."""
    first = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)        # box x 2..5, y 1..3
    second = np.array([[0, 1], [1, 1], [1, 0]], dtype=bool)     # box x 4..6, y 2..5
    return MaskCrops((6, 8), 2, np.array([0, 0]), np.array([[2, 1, 5, 3], [4, 2, 6, 5]]),
                     np.concatenate([first.ravel(), second.ravel()]))


def test_full_masks_round_trip_through_tight_crops():
    masks = random_masks()
    crops = MaskCrops.from_masks(masks)
    assert crops.num_instances == len(masks) and crops.image_size == masks.shape[1:]
    assert crops.instances.tolist() == list(range(len(masks) - 1))          # the empty mask has no crop
    np.testing.assert_array_equal(crops.to_masks(), masks)
    for crop, (x0, y0, x1, y1) in zip(crops.crops, crops.boxes):
        assert crop.shape == (y1 - y0, x1 - x0)
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()   # tight


def test_crops_are_views_of_one_flat_array():
    crops = MaskCrops.from_masks(random_masks())
    assert sum(crop.size for crop in crops.crops) == crops.values.size
    crops.crops[1][0, 0] = not crops.crops[1][0, 0]
    assert crops.values[crops.crops[0].size] == crops.crops[1][0, 0]


def test_instance_boxes_enclose_the_set_pixels():
    masks = random_masks(seed=3)
    boxes = MaskCrops.from_masks(masks).instance_boxes()
    for mask, box in zip(masks, boxes):
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
        assert box.tolist() == expected


def test_an_instance_of_several_crops_is_their_union():
    crops = two_crop_instance()
    masks = crops.to_masks()
    expected = np.zeros((6, 8), dtype=bool)
    expected[1, 2:4] = expected[2, 3] = True                          # first crop
    expected[2, 5] = expected[3, 4:6] = expected[4, 4] = True         # second crop
    np.testing.assert_array_equal(masks[0], expected)
    assert not masks[1].any()
    assert crops.instance_boxes().tolist() == [[2, 1, 6, 5], [0, 0, 0, 0]]
    box, mask = crops.instance_crop(0)
    assert box == (2, 1, 6, 5)
    np.testing.assert_array_equal(mask, expected[1:5, 2:6])
    assert crops.instance_crop(1)[1].shape == (0, 0)


def test_device_values_come_to_the_host_once():
    crops = two_crop_instance()
    on_device = MaskCrops(crops.image_size, 2, crops.instances, crops.boxes, torch.from_numpy(crops.values))
    assert [c.shape for c in on_device.crops] == [(2, 3), (3, 2)]              # torch views work the same
    host = on_device.numpy()
    assert isinstance(host.values, np.ndarray)
    np.testing.assert_array_equal(host.to_masks(), crops.to_masks())
    assert crops.numpy() is crops
