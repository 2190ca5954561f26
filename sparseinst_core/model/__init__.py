"""The network: ResNet backbone -> instance context encoder -> IAM decoder, its presets and class names.

This layer imports nothing else of the package; everything else is built on it.
"""
from .class_names import COCO_CLASSES, load_class_names
from .input_size import SIZE_DIVISIBILITY, padded_shape, resized_shape
from .presets import PRESETS, TEST_MAX_SIZE, TEST_MIN_SIZE, ModelConfig, get_preset
from .sparseinst import SparseInst, build_model

__all__ = [
    "COCO_CLASSES", "PRESETS", "SIZE_DIVISIBILITY", "TEST_MAX_SIZE", "TEST_MIN_SIZE", "ModelConfig", "SparseInst",
    "build_model", "get_preset", "load_class_names", "padded_shape", "resized_shape",
]
