"""The inference settings every client shares: default thresholds, and the devices, precisions and backends.

The node's parameters, the predictor, the tools and the evaluation read them from here; the test-time
input size is the model's (`model.presets.TEST_MIN_SIZE`/`TEST_MAX_SIZE`, recorded in each checkpoint).
"""
from __future__ import annotations

SCORE_THRESHOLD = 0.3        # instances below this score are not reported
MASK_THRESHOLD = 0.45        # mask probability above which a pixel belongs to the instance (official)
MAX_INSTANCES = 100          # the network's number of instance queries: at most this many per image
# COCO evaluation integrates precision over all scores, so it keeps nearly everything (official setting).
EVAL_SCORE_THRESHOLD = 0.005

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("torch", "onnxruntime")
