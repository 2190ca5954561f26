"""Overlay drawing: coloured masks, contours, class names and scores on the image (for rviz and demos)."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from .mask_crops import crops_of


def palette(index: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def label_text(name: str, score: float, instance_id: int | None = None) -> str:
    """An instance's overlay label: "class score", or "class id score" when it has an id (a track's)."""
    return f"{name} {score:.2f}" if instance_id is None else f"{name} {int(instance_id)} {score:.2f}"


def draw_overlay(image: np.ndarray, result, class_names=None, alpha: float = 0.5, ids=None) -> np.ndarray:
    """Return a uint8 RGB copy of `image` (H, W, 3) with `result`'s instances drawn on it.

    `result` has `scores` (K,), `labels` (K,) and masks (`mask_crops`, or `masks` (K, H, W) bool), drawn
    lowest score first so the most confident instance is on top; each inside its crop, so no full-size
    mask is built. Colours follow the class so a class keeps its colour over time. `ids` (K,), when given,
    are written in the labels (the node's detection ids: track ids with tracking on).
    """
    overlay = image.copy()
    crops = crops_of(result)
    for index in np.argsort(result.scores, kind="stable"):
        (x0, y0, x1, y1), mask = crops.instance_crop(int(index))
        if not mask.any():
            continue
        label = int(result.labels[index])
        colour = np.array(palette(label), dtype=np.float32)
        window = overlay[y0:y1, x0:x1]                                     # a view: drawing goes to the overlay
        region = window[mask].astype(np.float32)
        window[mask] = (region * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        cv2.drawContours(overlay, contours, -1, tuple(int(c) for c in colour), 2)
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        text = label_text(name, result.scores[index], None if ids is None else ids[index])
        ys, xs = np.nonzero(mask)
        x, y = int(xs.mean()) + x0, int(ys.mean()) + y0
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        x = min(max(x - tw // 2, 0), max(overlay.shape[1] - tw, 0))
        cv2.rectangle(overlay, (x, y - th - 3), (x + tw + 2, y + 2), (0, 0, 0), -1)
        cv2.putText(overlay, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return overlay
