"""Speed of SparseInst on this machine, in one run: `python -m sparseinst_core.benchmark`.

For each preset, input size (shorter side; a 480x640 camera frame is resized to it, 4:3, and padded to
a multiple of 32), backend and precision it measures, like Table 8 of the paper, the latency of the
backbone, the encoder, the decoder and the post-processing (with 100 instances above the threshold), and
the frames per second of the whole predictor (resize, network, post-processing). Alongside: the model's
FLOPs (`torch.utils.flop_counter`, FLOPs = 2 x multiply-accumulates), the machine's matrix-multiply peak
measured once in the same run and the fraction of it the network (and its convolutions) achieves,
torchvision's Mask R-CNN R50-FPN at the same input, agreement between paths, and the speed-up ratios the
project targets. Writes benchmark.json, benchmark.md and (with matplotlib) benchmark.png to --output-dir.

Backends: "eager" (the plain model, official two-step post-processing: the baseline), "optimized"
(`optimize_for_inference` + fast post-processing) in fp32, in bf16 where the CPU or GPU computes in it,
and in fp16 on CUDA, "onnxruntime" (exported for each size, fast post-processing) and "openvino" (the same
export compiled by OpenVINO for the CPU; bf16 where the CPU runs it). Random weights:
speed does not depend on them (the threshold is 0 so all 100 queries are post-processed).

`--write-presets-doc docs/presets.md` writes the FLOPs/parameters table of every preset instead.

Modules: `measure` (timing, matmul peak, FLOPs, calibration), `variants` (the paths compared and how
each is measured), `run` (one run), `results` (the typed rows), `report` (Markdown, JSON, plot, presets
doc), `cli` (the arguments).
"""
from .cli import main

__all__ = ["main"]
