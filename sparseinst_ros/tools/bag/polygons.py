"""Instance masks -> COCO polygon annotations that labelling tools (CVAT, Label Studio) import and edit.

COCO rasterises a polygon by pixel centres: pixel (x, y) belongs to it when (x + 0.5, y + 0.5) lies inside
(an even-odd rule). Contours through the centres of a mask's boundary pixels (cv2.findContours on the mask)
would therefore lose half of every boundary pixel, about 10 % of a 20-pixel object. Traced on the mask
upsampled 2x, contours run a quarter pixel from the pixel edges instead, and rasterise back to exactly the
mask's pixels. COCO polygons have no holes of their own: each hole is walked as part of its outer boundary,
joined to it by a bridge travelled there and back, which the even-odd rule leaves out.
"""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
from pycocotools import mask as mask_utils

PARENT, FIRST_CHILD, NEXT = 3, 2, 0          # columns of cv2's contour hierarchy


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """bool [H,W] -> one polygon [x0, y0, x1, y1, ...] (pixel-corner coordinates) per connected part, its
    holes included."""
    upsampled = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)          # [2H,2W]
    contours, hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for index, contour in enumerate(contours):
        links = hierarchy[0]
        if links[index, PARENT] >= 0:        # a hole: walked with its outer boundary
            continue
        holes, child = [], links[index, FIRST_CHILD]
        while child >= 0:
            holes.append(_corner_coordinates(contours[child]))
            child = links[child, NEXT]
        polygons.append(_join_holes(_corner_coordinates(contour), holes).reshape(-1).tolist())
    return polygons


def _corner_coordinates(contour: np.ndarray) -> np.ndarray:
    """Points of a contour of the upsampled mask [N,1,2] -> the mask's pixel-corner coordinates [N,2]: the
    centre of upsampled pixel u lies at (u + 0.5) / 2."""
    return (contour.reshape(-1, 2) + 0.5) / 2


def _join_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """One ring [K,2]: the outer boundary, with each hole walked round from the outer vertex nearest to it."""
    attached = defaultdict(list)
    for hole in holes:
        distances = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(axis=2)              # [N,M]
        vertex, entry = np.unravel_index(np.argmin(distances), distances.shape)
        attached[vertex].append(np.concatenate([hole[entry:], hole[:entry + 1]]))        # round, back to the entry
    parts = []
    for vertex, point in enumerate(outer):
        parts.append(point[None])
        for loop in attached[vertex]:
            parts += [loop, point[None]]                                                 # there and back
    return np.concatenate(parts)


def polygon_annotation(mask: np.ndarray) -> dict | None:
    """"segmentation" (polygons), "area" and "bbox" ([x, y, w, h]) of a mask as COCO measures them on the
    polygons; None for an empty mask."""
    polygons = mask_polygons(mask)
    if not polygons:
        return None
    height, width = mask.shape
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"segmentation": polygons, "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}
