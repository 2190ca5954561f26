"""Masks -> COCO polygons for pre-labelling (sparseinst_ros.tools.bag.polygons, no ROS): rasterised by
pycocotools, the polygons give back exactly the mask's pixels, holes, thin parts and single pixels included."""
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sparseinst_ros.tools.bag.polygons import mask_polygons, polygon_annotation

HEIGHT, WIDTH = 48, 64


def rasterised(polygons) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, HEIGHT, WIDTH))).astype(bool)


def blob(seed: int) -> np.ndarray:
    return cv2.GaussianBlur(np.random.default_rng(seed).random((HEIGHT, WIDTH)), (0, 0), 2) > 0.5


def ring() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    cv2.circle(mask.view(np.uint8), (30, 24), 15, 1, -1)
    cv2.circle(mask.view(np.uint8), (30, 24), 6, 0, -1)                   # a hole
    mask[22:25, 29:32] = True                                             # an island in the hole
    mask[5, 60] = mask[40:47, 2] = True                                   # a single pixel, a 1-pixel line
    return mask


@pytest.mark.parametrize("mask", [ring(), *[blob(seed) for seed in range(5)],
                                  np.random.default_rng(0).random((HEIGHT, WIDTH)) > 0.6],
                         ids=["ring", *[f"blob{seed}" for seed in range(5)], "noise"])
def test_polygons_rasterise_back_to_exactly_the_mask(mask):
    np.testing.assert_array_equal(rasterised(mask_polygons(mask)), mask)


def test_contours_through_pixel_centres_would_not():
    """What the upsampling is for: cv2.findContours on the mask itself loses a half pixel all round."""
    mask = ring()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    naive = rasterised([c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3])
    assert (naive & mask).sum() / (naive | mask).sum() < 0.9


def test_annotation_measures_area_and_box_on_the_polygons():
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:20, 5:25] = True
    annotation = polygon_annotation(mask)
    assert annotation["area"] == 200.0 and annotation["bbox"] == [5.0, 10.0, 20.0, 10.0]
    assert polygon_annotation(np.zeros((HEIGHT, WIDTH), bool)) is None
