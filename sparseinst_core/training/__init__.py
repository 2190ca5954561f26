"""Training: the set-prediction losses (matcher, criterion), the optimiser and schedule, the training loop's
pieces, COCO evaluation through the predictor, distributed helpers and the metrics log.

May import the model, data, I/O and inference layers; `training/train.py` and `training/evaluate.py`
(outside the package) are its command lines.
"""
from .criterion import SparseInstCriterion
from .matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SparseInstCriterion"]
