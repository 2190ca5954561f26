"""SparseInst: sparse instance activation for real-time instance segmentation, in PyTorch."""
from .checkpoint import LoadReport, load_checkpoint, load_model, read_checkpoint, save_checkpoint
from .class_names import COCO_CLASSES, load_class_names
from .model import SparseInst, build_model
from .predictor import Instances, Predictor
from .presets import PRESETS, ModelConfig, get_preset

__all__ = [
    "COCO_CLASSES", "PRESETS", "Instances", "LoadReport", "ModelConfig", "Predictor", "SparseInst",
    "build_model", "get_preset", "load_checkpoint", "load_class_names", "load_model", "read_checkpoint", "save_checkpoint",
]
