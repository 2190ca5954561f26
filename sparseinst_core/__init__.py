"""SparseInst: sparse instance activation for real-time instance segmentation, in PyTorch.

Layers, each importing only those before it: `model` (the network) <- `io` (weights and model files)
<- `inference` (predictor, backends, export) <- `training`; `data` serves training; `tools` (commands,
benchmarks, demo) sit on top and nothing imports them. See docs/architecture.md.
"""
from .inference import Instances, Predictor, load_predictor
from .io import LoadReport, load_checkpoint, load_model, read_checkpoint, save_checkpoint
from .model import COCO_CLASSES, PRESETS, ModelConfig, SparseInst, build_model, get_preset, load_class_names

__all__ = [
    "COCO_CLASSES", "PRESETS", "Instances", "LoadReport", "ModelConfig", "Predictor", "SparseInst",
    "build_model", "get_preset", "load_checkpoint", "load_class_names", "load_model", "load_predictor",
    "read_checkpoint", "save_checkpoint",
]
