"""From a weights file to a ready predictor: the decisions every client (node, tools) makes the same way.

Which file "demo" names, which class names apply (a names file, else those recorded in the checkpoint,
else COCO's for an 80-class model, else numbers), and which input size (the one recorded in the model's
config unless given).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..io import demo_weights_path, load_model
from ..model import COCO_CLASSES, load_class_names
from .predictor import Predictor

DEMO_WEIGHTS = "demo"     # the weights name of the model shipped with the package


@dataclass
class LoadedPredictor:
    """A predictor, the names of its classes, and a line that describes it in logs and diagnostics."""

    predictor: Predictor
    class_names: list[str]
    description: str


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The checkpoint a weights argument names; "demo" is the model shipped with sparseinst_core."""
    if str(weights) == DEMO_WEIGHTS:
        return demo_weights_path()
    return Path(weights).expanduser()


def class_names_for(num_classes: int, recorded: list[str] | None, names_file: str | os.PathLike | None = None
                    ) -> list[str]:
    """Names of a model's classes: from `names_file`, else `recorded` in the checkpoint, else COCO's for 80
    classes, else "0".."C-1"; a ValueError when their number differs from the model's."""
    if names_file:
        names, source = load_class_names(names_file), str(names_file)
    elif recorded:
        names, source = list(recorded), "the checkpoint"
    elif num_classes == len(COCO_CLASSES):
        names, source = list(COCO_CLASSES), "COCO"
    else:
        names, source = [str(i) for i in range(num_classes)], "numbers"
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names (from {source}) but the model has {num_classes} classes")
    return names


def load_predictor(weights: str | os.PathLike = DEMO_WEIGHTS, preset: str | None = None,
                   class_names_file: str | os.PathLike | None = None, min_size: int = 0, max_size: int = 0,
                   **predictor_options) -> LoadedPredictor:
    """Load `weights` ("demo", or a checkpoint: official or this project's) into a `Predictor`.

    `preset` is needed for official checkpoints only; min_size/max_size 0 take the test size recorded in
    the model's config. Other options go to `Predictor` (thresholds, device, precision, backend, ...).
    Raises FileNotFoundError or ValueError with the reason.
    """
    path = resolve_weights(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    model, report = load_model(path, preset=preset or None)
    class_names = class_names_for(model.num_classes, report.metadata.get("class_names"), class_names_file)
    min_size = min_size or model.config.min_size_test
    max_size = max_size or max(model.config.max_size_test, min_size)
    predictor = Predictor(model.eval(), min_size=min_size, max_size=max_size, **predictor_options)
    description = f"{model.preset or preset} from {path}, input {min_size}..{max_size} px"
    return LoadedPredictor(predictor, class_names, description)
