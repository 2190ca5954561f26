"""Class names: the 80 COCO categories of the official checkpoints, and loading names from a file."""
from __future__ import annotations

import json
import os
from pathlib import Path

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


def load_class_names(path: str | os.PathLike) -> list[str]:
    """Read names from a text file (one per line) or a JSON list / COCO annotation file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class names file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "categories" in data:  # COCO annotations: order of ascending id
            return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
        if isinstance(data, list) and all(isinstance(n, str) for n in data):
            return data
        raise ValueError(f"{path}: expected a JSON list of names or a COCO file with 'categories'")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} holds no class names")
    return names
