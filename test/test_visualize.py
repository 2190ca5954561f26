"""Overlay drawing: masks tinted by class colour, from crops exactly as from full masks."""
import numpy as np

from sparseinst_core import Instances
from sparseinst_core.inference.mask_crops import MaskCrops
from sparseinst_core.inference.visualize import draw_overlay, label_text, palette


def overlapping_instances():
    """Three instances on a 60x80 image; the second as two crops (its parts far apart)."""
    masks = np.zeros((3, 60, 80), dtype=bool)
    masks[0, 5:30, 10:50] = True
    masks[1, 20:28, 40:48] = masks[1, 45:58, 60:78] = True
    masks[2, 35:55, 5:25] = True
    crops = MaskCrops.from_masks(masks[[0, 2]])
    first, second = masks[1, 20:28, 40:48].ravel(), masks[1, 45:58, 60:78].ravel()
    crops = MaskCrops((60, 80), 3, np.array([0, 2, 1, 1]),
                      np.concatenate([crops.boxes, [[40, 20, 48, 28], [60, 45, 78, 58]]]),
                      np.concatenate([crops.values, first, second]))
    return np.array([0.9, 0.6, 0.4], np.float32), np.array([0, 1, 2]), masks, crops


def test_drawing_from_crops_equals_drawing_from_full_masks():
    scores, labels, masks, crops = overlapping_instances()
    np.testing.assert_array_equal(crops.to_masks(), masks)
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    from_crops = draw_overlay(image, Instances(scores, labels, mask_crops=crops), ["a", "b", "c"])
    from_masks = draw_overlay(image, Instances(scores, labels, masks), ["a", "b", "c"])
    np.testing.assert_array_equal(from_crops, from_masks)


def test_mask_pixels_are_tinted_and_others_untouched():
    scores, labels, masks, crops = overlapping_instances()
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    overlay = draw_overlay(image, Instances(scores, labels, mask_crops=crops), alpha=0.5)
    colour = np.array(palette(2), dtype=np.float32)
    np.testing.assert_array_equal(overlay[50, 8], (100 * 0.5 + colour * 0.5).astype(np.uint8))    # inside mask 2
    assert (overlay[2, 2] == 100).all() and (overlay[58, 2] == 100).all()   # far from every mask


def test_contours_follow_each_mask_edge():
    scores, labels, masks, crops = overlapping_instances()
    overlay = draw_overlay(np.full((60, 80, 3), 100, dtype=np.uint8), Instances(scores, labels, mask_crops=crops))
    assert overlay[15, 10].tolist() == list(palette(0))               # left edge of mask 0
    assert overlay[50, 77].tolist() == list(palette(1))               # right edge of mask 1's second part
    assert (overlay[15, 4] == 100).all() and (overlay[25, 54] == 100).all()   # beside them


def test_labels_carry_the_instance_id_when_given():
    assert label_text("circle", 0.934) == "circle 0.93"
    assert label_text("circle", 0.934, 17) == "circle 17 0.93"
    scores, labels, masks, crops = overlapping_instances()
    image = np.full((60, 80, 3), 100, dtype=np.uint8)
    result = Instances(scores, labels, mask_crops=crops)
    with_ids = draw_overlay(image, result, ["a", "b", "c"], ids=np.array([1, 2, 3]))
    np.testing.assert_array_equal(with_ids, draw_overlay(image, result, ["a", "b", "c"], ids=np.array([1, 2, 3])))
    assert (with_ids != draw_overlay(image, result, ["a", "b", "c"], ids=np.array([1, 2, 9]))).any()
    assert (with_ids != draw_overlay(image, result, ["a", "b", "c"])).any()
