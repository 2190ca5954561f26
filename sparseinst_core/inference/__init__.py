"""Inference: images in, instances out. Pre- and post-processing, the predictor, backends, optimisation,
ONNX export and drawing. Imports the model and I/O layers only.
"""
from .defaults import BACKENDS, DEVICES, MASK_THRESHOLD, PRECISIONS, SCORE_THRESHOLD
from .device import resolve_device
from .loader import DEMO_WEIGHTS, LoadedPredictor, load_predictor
from .predictor import Instances, Predictor

__all__ = [
    "BACKENDS", "DEMO_WEIGHTS", "DEVICES", "Instances", "LoadedPredictor", "MASK_THRESHOLD", "PRECISIONS",
    "Predictor", "SCORE_THRESHOLD", "load_predictor", "resolve_device",
]
