"""Overlay drawing: coloured masks, contours, class names and scores on the image (for rviz and demos)."""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def palette(index: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_overlay(image: np.ndarray, result, class_names=None, alpha: float = 0.5) -> np.ndarray:
    """Return a uint8 RGB copy of `image` (H, W, 3) with `result`'s instances drawn on it.

    `result` has `scores` (K,), `labels` (K,), `masks` (K, H, W) bool, drawn lowest score first so the
    most confident instance is on top. Colours follow the class so a class keeps its colour over time.
    """
    overlay = image.copy()
    for index in np.argsort(result.scores, kind="stable"):
        mask = result.masks[index]
        if not mask.any():
            continue
        label = int(result.labels[index])
        colour = np.array(palette(label), dtype=np.float32)
        region = overlay[mask].astype(np.float32)
        overlay[mask] = (region * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, tuple(int(c) for c in colour), 2)
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        text = f"{name} {result.scores[index]:.2f}"
        ys, xs = np.nonzero(mask)
        x, y = int(xs.mean()), int(ys.mean())
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        x = min(max(x - tw // 2, 0), max(overlay.shape[1] - tw, 0))
        cv2.rectangle(overlay, (x, y - th - 3), (x + tw + 2, y + 2), (0, 0, 0), -1)
        cv2.putText(overlay, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return overlay
