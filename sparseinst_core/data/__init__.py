"""Data for training: COCO-format datasets, training transforms, batching, and the synthetic shapes dataset.

Imports only the model layer (for the input geometry).
"""
from .coco import CocoImages, CocoInstanceDataset, collate_batch, load_coco_annotations
from .synthetic import (
    SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES, generate_synthetic_dataset, render_scene,
)
from .transforms import build_train_transforms

__all__ = [
    "CocoImages", "CocoInstanceDataset", "SYNTHETIC_CATEGORY_IDS", "SYNTHETIC_CLASSES", "build_train_transforms",
    "collate_batch", "generate_synthetic_dataset", "load_coco_annotations", "render_scene",
]
