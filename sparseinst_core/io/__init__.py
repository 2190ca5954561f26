"""Weights and model files: checkpoints (this project's and the official releases), ONNX metadata, assets.

Imports only the model layer.
"""
from .assets import demo_weights_path
from .checkpoint import LoadReport, load_checkpoint, load_model, read_checkpoint, save_checkpoint

__all__ = ["LoadReport", "demo_weights_path", "load_checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]
