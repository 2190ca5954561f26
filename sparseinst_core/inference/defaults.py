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
BACKENDS = ("torch", "onnxruntime", "openvino")

# Exported model files (ONNX for ONNX Runtime and OpenVINO), kept across runs in one directory
# (`export_cache`): $SPARSEINST_CACHE_DIR, else $XDG_CACHE_HOME/sparseinst, else ~/.cache/sparseinst.
CACHE_DIR_VARIABLE = "SPARSEINST_CACHE_DIR"
CACHE_MAX_ENTRIES = 16             # files kept, least recently used removed first
CACHE_MAX_BYTES = 2 << 30          # 2 GiB: about 16 r50 exports (126 MB each), 40 of r18 (51 MB)
# Input sizes an export-per-size backend keeps a live session for (least recently used closed first):
# an ONNX Runtime session of r50_giam holds about 200 MB.
MAX_SESSIONS = 4
# Input shapes the torch backend keeps a captured CUDA graph for (each holds its activations' memory).
MAX_CUDA_GRAPHS = 4
