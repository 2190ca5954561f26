"""Data: COCO-format datasets, transforms, batching, and the synthetic shapes dataset."""
from sparseinst_core.data.coco import CocoInstanceDataset, collate_batch, load_coco_annotations
from sparseinst_core.data.synthetic import (
    SYNTHETIC_CATEGORY_IDS, SYNTHETIC_CLASSES, generate_synthetic_dataset, render_scene,
)
from sparseinst_core.data.transforms import build_test_transforms, build_train_transforms

__all__ = [
    "CocoInstanceDataset", "SYNTHETIC_CATEGORY_IDS", "SYNTHETIC_CLASSES", "build_test_transforms",
    "build_train_transforms", "collate_batch", "generate_synthetic_dataset", "load_coco_annotations",
    "render_scene",
]
