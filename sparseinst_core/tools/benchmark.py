"""Speed of SparseInst on this machine, in one run: `python -m sparseinst_core.benchmark`.

For each preset, input size (shorter side; a 480x640 camera frame is resized to it, 4:3, and padded to
a multiple of 32), backend and precision it measures, like Table 8 of the paper, the latency of the
backbone, the encoder, the decoder and the post-processing (with 100 instances above the threshold), and
the frames per second of the whole predictor (resize, network, post-processing). Alongside: the model's
FLOPs (`torch.utils.flop_counter`, FLOPs = 2 x multiply-accumulates), the machine's matrix-multiply peak
measured in the same run and the fraction of it the network (and its convolutions) achieves, torchvision's
Mask R-CNN R50-FPN at the same input, agreement between paths, and the speed-up ratios the project
targets. Writes benchmark.json, benchmark.md and benchmark.png to --output-dir.

Backends: "eager" (the plain model, official two-step post-processing: the baseline), "optimized"
(`optimize_for_inference` + fast post-processing) in fp32 and bf16 (CPU) or fp16 (CUDA), and
"onnxruntime" (exported for each size, fast post-processing). Random weights: speed does not depend on
them (the threshold is 0 so all 100 queries are post-processed).

`--write-presets-doc docs/presets.md` writes the FLOPs/parameters table of every preset instead.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..inference.postprocess import postprocess, postprocess_reference
from ..inference.predictor import Predictor
from ..model import PRESETS, build_model, padded_shape, resized_shape

DEFAULT_SIZES = (448, 512, 608, 640)
CAMERA_SHAPE = (480, 640)          # the frame every size is computed from (VGA, 4:3)
STAGES = ("backbone", "encoder", "decoder")


# ----------------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of `function()` in seconds over `repeats` calls, after `warmup` untimed ones.

    The minimum, not the median: on a machine shared with other work, interference only ever adds
    time, so the fastest call is the best estimate of the cost itself.
    """
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """The best rate (FLOP/s) of a large square matrix product: the machine's practical peak."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    with torch.inference_mode():
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def _deform_conv_flops(input_shape, weight_shape, offset_shape, *args, out_shape=None, **kwargs) -> int:
    """2 x MACs of torchvision's deformable convolution (the bilinear sampling is not counted)."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def count_flops(module, *inputs) -> dict[str, int]:
    """{"total", "conv", per-op...} FLOPs of one call, counted by `FlopCounterMode`."""
    mapping = {torch.ops.torchvision.deform_conv2d: _deform_conv_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(*inputs)
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    conv = sum(n for op, n in per_op.items() if "conv" in op)
    return {"total": int(counter.get_total_flops()), "conv": conv, **per_op}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_time_share(function, device: torch.device) -> float:
    """Fraction of one call's wall time spent in convolution kernels (torch.profiler, CPU or CUDA)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    function()
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profile:
        function()
        synchronize(device)
    events = profile.key_averages()
    if device.type == "cuda":
        conv = sum(e.self_device_time_total for e in events if "conv" in e.key.lower()) / 1e6
        total = sum(e.self_device_time_total for e in events) / 1e6
        return conv / total if total else float("nan")
    # the mkldnn/deformable kernels: their CPU time, self time of the innermost convolution op
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower()) / 1e6
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    return conv / total if total else float("nan")


# ------------------------------------------------------------------------------------------- set-up
def input_geometry(size: int) -> dict:
    """The resized and padded shape of a CAMERA_SHAPE frame at shorter side `size` (max side 4/3 of it)."""
    max_size = int(size * 4 / 3 + 0.5)
    resized = resized_shape(*CAMERA_SHAPE, size, max_size)
    return {"size": size, "max_size": max_size, "resized": resized, "padded": padded_shape(*resized)}


def camera_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*CAMERA_SHAPE, 3), dtype=np.uint8)


def network_stages(module):
    """[(stage name, function)] chaining to the network's outputs, for the torch backends' models."""
    normalize = getattr(module, "normalize", None) or (lambda x: (x - module.pixel_mean) / module.pixel_std)
    return [("backbone", lambda images: module.backbone(normalize(images))),
            ("encoder", module.encoder),
            ("decoder", module.decoder)]


@torch.no_grad()
def calibrate_batch_norm(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Sets every batch norm's statistics to those of its own input on `images` (data-dependent init).

    With random weights and identity statistics, activations grow block after block in a deep ResNet:
    an unrealistic regime in which float rounding is amplified, so backends would disagree far more
    than on a trained model, whose batch norms keep activations normalised. Agreement is therefore
    measured on calibrated random weights. One forward pass; layers are calibrated in execution order,
    so each sees the already normalised output of the ones before it.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    def set_statistics(module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
    try:
        model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    return model


def available_variants(device: torch.device, want_onnx: bool) -> list[tuple[str, str]]:
    variants = [("eager", "fp32"), ("optimized", "fp32")]
    if device.type == "cuda":
        variants.append(("optimized", "fp16"))
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        variants.append(("optimized", "bf16"))
    if want_onnx:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            variants.append(("onnxruntime", "fp32"))
        except ImportError as error:
            print(f"skipping onnxruntime: {error}", file=sys.stderr)
    return variants


# ----------------------------------------------------------------------------------------- benchmark
def benchmark_variant(model, preset, geometry, backend, precision, device, repeats, onnx_dir):
    """One row of the results, the raw network outputs (for cross-checking paths), and the predictor."""
    predictor_options = dict(min_size=geometry["size"], max_size=geometry["max_size"], score_threshold=0.0,
                             device=device, precision=precision)
    if backend == "eager":
        predictor = Predictor(model, optimize=False, postprocess="reference", **predictor_options)
    elif backend == "optimized":
        predictor = Predictor(model, **predictor_options)
    else:
        height, width = geometry["padded"]
        onnx_path = Path(onnx_dir) / f"{preset}_{height}x{width}.onnx"
        predictor = Predictor(model, backend="onnxruntime", onnx_path=onnx_path, input_size=(height, width),
                              **predictor_options)
    device = predictor.device
    image = camera_image()
    batch = predictor.batch([predictor.preprocess(image)]).to(device)
    row = {"preset": preset, "backend": backend, "precision": precision, "size": geometry["size"],
           "input": list(geometry["padded"]), "device": str(device)}

    with torch.inference_mode():
        if backend == "onnxruntime":  # one graph: no stage boundaries to time
            row["network_ms"] = 1e3 * time_call(lambda: predictor.backend(batch), device, repeats)
            outputs = predictor.backend(batch)
            row.update({f"{stage}_ms": None for stage in STAGES})
            row["providers"] = predictor.backend.providers
        else:
            network = predictor.backend.model
            value = batch
            for stage, function in network_stages(network):
                row[f"{stage}_ms"] = 1e3 * time_call(lambda: function(value), device, repeats)
                value = function(value)
            outputs = {key: tensor.float() for key, tensor in value.items()}
            row["network_ms"] = sum(row[f"{stage}_ms"] for stage in STAGES)
        post = postprocess_reference if backend == "eager" else postprocess
        post_args = (outputs["pred_logits"][0], outputs["pred_scores"][0], outputs["pred_masks"][0],
                     batch.shape[-2:], geometry["resized"], CAMERA_SHAPE, 0.0, 0.45)
        row["postprocess_ms"] = 1e3 * time_call(lambda: post(*post_args), device, repeats)
        row["instances"] = len(post(*post_args)[0])
        row["end_to_end_ms"] = 1e3 * time_call(lambda: predictor(image), device, repeats)
    row["fps"] = 1e3 / row["end_to_end_ms"]
    row["postprocess_share"] = row["postprocess_ms"] / row["end_to_end_ms"]
    return row, outputs, predictor


def interleaved_end_to_end(variants: dict, device, rounds: int) -> None:
    """Times every predictor of one preset and size in turn, `rounds` times: rows gain the per-round times.

    On a shared machine the load drifts over the minutes that separate one variant's measurement from
    another's; in round-robin order every variant sees the same drift, so per-round ratios between two
    variants (`ratios`) are far steadier than ratios of separately measured times.
    variants: (backend, precision) -> (row, predictor).
    """
    image = camera_image()
    for row, _ in variants.values():
        row["end_to_end_rounds_ms"] = []
    with torch.inference_mode():
        for _ in range(rounds):
            for row, predictor in variants.values():
                row["end_to_end_rounds_ms"].append(1e3 * time_call(lambda: predictor(image), device, 1, warmup=0))


def compare_outputs(outputs, reference, geometry) -> dict:
    """Raw-output relative error, and final-mask agreement query by query (threshold 0, unsorted)."""
    relative = max(((outputs[k] - reference[k]).abs().max() / reference[k].abs().max().clamp(min=1e-12)).item()
                   for k in reference)
    args = (geometry["padded"], geometry["resized"], CAMERA_SHAPE, 0.0, 0.45)
    a = postprocess(outputs["pred_logits"][0], outputs["pred_scores"][0], outputs["pred_masks"][0].float(), *args)
    b = postprocess(reference["pred_logits"][0], reference["pred_scores"][0], reference["pred_masks"][0], *args)
    intersection = (a[2] & b[2]).flatten(1).sum(1).float()
    union = (a[2] | b[2]).flatten(1).sum(1).float()
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return {"max_relative_error": relative, "mask_iou_mean": iou.mean().item(), "mask_iou_min": iou.min().item(),
            "label_agreement": (a[1] == b[1]).float().mean().item(),
            "score_max_abs_diff": (a[0] - b[0]).abs().max().item()}


def benchmark_maskrcnn(geometry, device, repeats) -> dict:
    """torchvision Mask R-CNN R50-FPN (random weights, no downloads), 100 detections, same frame and size."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=geometry["size"],
                                  max_size=geometry["max_size"], box_score_thresh=0.0,
                                  box_detections_per_img=100).eval().to(device)
    image = torch.from_numpy(camera_image()).permute(2, 0, 1).float().div(255).to(device)
    with torch.inference_mode():
        seconds = time_call(lambda: model([image]), device, repeats)
        flops = count_flops(lambda x: model([x]), image)
        detections = len(model([image])[0]["scores"])
    return {"model": "maskrcnn_resnet50_fpn", "size": geometry["size"], "input": list(geometry["padded"]),
            "end_to_end_ms": 1e3 * seconds, "fps": 1 / seconds, "instances": detections,
            "gflops": flops["total"] / 1e9, "params_m": count_parameters(model) / 1e6}


def run(presets, sizes, repeats, output_dir, device="auto", onnx=True, maskrcnn=True, profile=True,
        rounds: int = 7) -> dict:
    from ..inference import resolve_device

    device = resolve_device(device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"measuring the matrix-multiply peak on {machine['device']} ...", flush=True)
    reduced = torch.float16 if device.type == "cuda" else torch.bfloat16
    peaks = {"fp32": matmul_peak(device, torch.float32, repeats=10), ("fp16" if device.type == "cuda" else "bf16"):
             matmul_peak(device, reduced, size=4096, repeats=10)}
    for name, peak in peaks.items():
        print(f"  {name} matmul peak: {peak / 1e9:.0f} GFLOP/s")
    variants = available_variants(device, onnx)
    results = {"machine": machine, "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
               "rows": [], "flops": {}, "agreement": [], "maskrcnn": [], "conv_efficiency": []}

    onnx_dir = tempfile.TemporaryDirectory(prefix="sparseinst_bench_")  # exported files are large: not kept
    for preset in presets:
        model = build_model(preset).eval().to(device)
        calibrate_batch_norm(model, torch.rand(2, 3, 256, 352, generator=torch.Generator().manual_seed(0)).to(device) * 255)
        results["flops"][preset] = {"params_m": count_parameters(model) / 1e6}
        for size in sizes:
            geometry = input_geometry(size)
            example = torch.rand(1, 3, *geometry["padded"], device=device) * 255
            flops = count_flops(model, example)
            results["flops"][preset][str(size)] = {"gflops": flops["total"] / 1e9, "conv_gflops": flops["conv"] / 1e9}
            reference = None
            measured = {}
            for backend, precision in variants:
                print(f"{preset} {size} {backend} {precision} ...", flush=True)
                try:
                    row, outputs, predictor = benchmark_variant(model, preset, geometry, backend, precision, device,
                                                                repeats, onnx_dir.name)
                except (RuntimeError, ValueError) as error:  # e.g. an op an exporter or provider lacks
                    print(f"  skipped: {error}", file=sys.stderr)
                    continue
                row["gflops"] = flops["total"] / 1e9
                row["achieved_gflops"] = flops["total"] / (row["network_ms"] / 1e3) / 1e9
                row["fraction_of_peak"] = row["achieved_gflops"] * 1e9 / peaks.get(precision, peaks["fp32"])
                results["rows"].append(row)
                measured[(backend, precision)] = (row, predictor)
                print("  " + _row_summary(row), flush=True)
                if backend == "eager":
                    reference = outputs
                elif reference is not None:
                    results["agreement"].append({"preset": preset, "size": size, "backend": backend,
                                                 "precision": precision, "versus": "eager fp32",
                                                 **compare_outputs(outputs, reference, geometry)})
            if rounds:
                print(f"{preset} {size}: {rounds} interleaved rounds of every variant ...", flush=True)
                interleaved_end_to_end(measured, device, rounds)
            del measured
            if profile and size == max(sizes):
                results["conv_efficiency"] += convolution_efficiency(model, preset, geometry, device, flops, peaks)
        del model
    onnx_dir.cleanup()
    # Peaks again at the end, the best of both kept: a peak measured while the machine was busy would
    # flatter every fraction computed from it.
    for name, dtype, size in (("fp32", torch.float32, 2048), (next(k for k in peaks if k != "fp32"), reduced, 4096)):
        peaks[name] = max(peaks[name], matmul_peak(device, dtype, size=size, repeats=10))
    results["matmul_peak_gflops"] = {k: v / 1e9 for k, v in peaks.items()}
    for row in results["rows"]:
        row["fraction_of_peak"] = row["achieved_gflops"] * 1e9 / peaks.get(row["precision"], peaks["fp32"])
    for row in results["conv_efficiency"]:
        row["conv_fraction_of_peak"] = row["conv_gflops_per_s"] * 1e9 / peaks[row["precision"]]
    if maskrcnn:
        for size in sorted({max(sizes)}):
            print(f"maskrcnn_resnet50_fpn {size} ...", flush=True)
            results["maskrcnn"].append(benchmark_maskrcnn(input_geometry(size), device, repeats))
    results["ratios"] = ratios(results["rows"])
    write_reports(results, output_dir)
    return results


def convolution_efficiency(model, preset, geometry, device, flops, peaks) -> list[dict]:
    """Achieved conv rate = conv FLOPs / (network time x conv time share), for the optimised torch paths."""
    from ..inference.optimize import optimize_for_inference

    rows = []
    example = torch.rand(1, 3, *geometry["padded"], device=device) * 255
    precisions = ["fp32", "fp16" if device.type == "cuda" else "bf16"]
    for precision in precisions:
        if precision not in peaks:
            continue
        optimized = optimize_for_inference(model, precision=precision, device=device)
        with torch.inference_mode():
            seconds = time_call(lambda: optimized(example), device, repeats=3)
            share = conv_time_share(lambda: optimized(example), device)
        conv_rate = flops["conv"] / (seconds * share)
        rows.append({"preset": preset, "size": geometry["size"], "precision": precision,
                     "network_ms": 1e3 * seconds, "conv_time_share": share, "conv_gflops_per_s": conv_rate / 1e9,
                     "conv_fraction_of_peak": conv_rate / peaks[precision]})
        print(f"  conv efficiency {precision}: {100 * share:.0f}% of the time in convs, "
              f"{conv_rate / 1e9:.0f} GFLOP/s = {100 * conv_rate / peaks[precision]:.0f}% of the matmul peak")
    return rows


def ratios(rows) -> list[dict]:
    """The speed-ups the project targets, per preset and size (end-to-end throughput ratios)."""
    index = {(r["preset"], r["size"], r["backend"], r["precision"]): r for r in rows}
    pairs = [("optimized fp32 vs eager fp32 + reference post-processing", ("optimized", "fp32"), ("eager", "fp32")),
             ("bf16 vs fp32 (optimized)", ("optimized", "bf16"), ("optimized", "fp32")),
             ("fp16 vs fp32 (optimized)", ("optimized", "fp16"), ("optimized", "fp32")),
             ("onnxruntime vs optimized torch (fp32)", ("onnxruntime", "fp32"), ("optimized", "fp32"))]
    out = []
    for preset, size in sorted({(r["preset"], r["size"]) for r in rows}):
        for name, new, old in pairs:
            a, b = index.get((preset, size, *new)), index.get((preset, size, *old))
            if a and b:
                ratio = {"preset": preset, "size": size, "ratio": name,
                         "end_to_end": b["end_to_end_ms"] / a["end_to_end_ms"],
                         "network": b["network_ms"] / a["network_ms"]}
                if a.get("end_to_end_rounds_ms") and b.get("end_to_end_rounds_ms"):
                    per_round = np.array(b["end_to_end_rounds_ms"]) / np.array(a["end_to_end_rounds_ms"])
                    ratio["end_to_end_interleaved"] = float(np.median(per_round))
                    ratio["end_to_end_interleaved_range"] = [float(per_round.min()), float(per_round.max())]
                out.append(ratio)
    return out


# ------------------------------------------------------------------------------------------ reports
def _fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def _row_summary(row) -> str:
    stages = " ".join(f"{s} {_fmt(row[f'{s}_ms'])}" for s in STAGES)
    return (f"{stages} | network {_fmt(row['network_ms'])} ms, post {_fmt(row['postprocess_ms'])} ms "
            f"({100 * row['postprocess_share']:.1f}%), end-to-end {_fmt(row['end_to_end_ms'])} ms = "
            f"{row['fps']:.2f} FPS, {100 * row['fraction_of_peak']:.0f}% of matmul peak")


def markdown_report(results) -> str:
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["matmul_peak_gflops"].items())
    lines = ["# SparseInst benchmark", "",
             f"Device: {results['machine']['device']} ({results['machine']['processor']}, "
             f"{results['machine']['torch_threads']} torch threads, torch {results['machine']['torch']}). "
             f"Measured matrix-multiply peak: {peaks}.", "",
             "Latency in ms (best of the repeats), input = a 480x640 frame resized to the size (shorter side) and padded; "
             "post-processing with 100 instances; end-to-end = `Predictor(image)`.", "",
             "| preset | backend | precision | size | input | backbone | encoder | decoder | network | post | "
             "post % | end-to-end | FPS | GFLOPs | % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['preset']} | {r['backend']} | {r['precision']} | {r['size']} | "
                     f"{r['input'][0]}x{r['input'][1]} | {_fmt(r['backbone_ms'])} | {_fmt(r['encoder_ms'])} | "
                     f"{_fmt(r['decoder_ms'])} | {_fmt(r['network_ms'])} | {_fmt(r['postprocess_ms'])} | "
                     f"{100 * r['postprocess_share']:.1f} | {_fmt(r['end_to_end_ms'])} | {r['fps']:.2f} | "
                     f"{r['gflops']:.1f} | {100 * r['fraction_of_peak']:.0f} |")
    if results["ratios"]:
        lines += ["", "## Speed-ups (throughput ratios)", "",
                  "End-to-end interleaved: the median over rounds in which every variant ran once in turn, so both "
                  "sides of a ratio saw the same machine load (min..max over the rounds); best-of: the ratio of the "
                  "separately measured best times of the table above.", "",
                  "| preset | size | ratio | end-to-end, interleaved (min..max) | end-to-end, best-of | network |",
                  "|---|---|---|---|---|---|"]
        for r in results["ratios"]:
            interleaved = (f"**{r['end_to_end_interleaved']:.2f}x** ({r['end_to_end_interleaved_range'][0]:.2f}.."
                           f"{r['end_to_end_interleaved_range'][1]:.2f})" if "end_to_end_interleaved" in r else "-")
            lines.append(f"| {r['preset']} | {r['size']} | {r['ratio']} | {interleaved} | {r['end_to_end']:.2f}x | "
                         f"{r['network']:.2f}x |")
    if results["conv_efficiency"]:
        lines += ["", "## Convolutions against the matmul peak (optimised torch, largest size)", "",
                  "| preset | size | precision | network ms | conv share of time | conv GFLOP/s | % of peak |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['preset']} | {r['size']} | {r['precision']} | {r['network_ms']:.1f} | "
                  f"{100 * r['conv_time_share']:.0f}% | {r['conv_gflops_per_s']:.0f} | "
                  f"{100 * r['conv_fraction_of_peak']:.0f} |" for r in results["conv_efficiency"]]
    if results["agreement"]:
        lines += ["", "## Agreement with the plain eager fp32 model (same random weights and frame)", "",
                  "| preset | size | path | max rel. error of raw outputs | mask IoU mean (min) | same label | "
                  "max score diff |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {a['preset']} | {a['size']} | {a['backend']} {a['precision']} | {a['max_relative_error']:.1e} | "
                  f"{a['mask_iou_mean']:.4f} ({a['mask_iou_min']:.3f}) | {100 * a['label_agreement']:.0f}% | "
                  f"{a['score_max_abs_diff']:.1e} |" for a in results["agreement"]]
    if results["maskrcnn"]:
        lines += ["", "## Peer: torchvision maskrcnn_resnet50_fpn (eager fp32, 100 detections)", "",
                  "| size | input | end-to-end ms | FPS | GFLOPs | params (M) |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['size']} | {m['input'][0]}x{m['input'][1]} | {m['end_to_end_ms']:.1f} | {m['fps']:.2f} | "
                  f"{m['gflops']:.1f} | {m['params_m']:.1f} |" for m in results["maskrcnn"]]
    lines += ["", "FLOPs = 2 x multiply-accumulates, counted by `torch.utils.flop_counter` (+ deformable convs).", ""]
    return "\n".join(lines)


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fps_axis, latency_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = {}
    for r in results["rows"]:
        series.setdefault((r["preset"], r["backend"], r["precision"]), []).append(r)
    for (preset, backend, precision), rows in series.items():
        rows = sorted(rows, key=lambda r: r["size"])
        sizes = [r["size"] for r in rows]
        label = f"{preset} {backend} {precision}"
        fps_axis.plot(sizes, [r["fps"] for r in rows], marker="o", label=label)
        latency_axis.plot(sizes, [r["network_ms"] for r in rows], marker="o", label=label)
    for m in results["maskrcnn"]:
        fps_axis.scatter([m["size"]], [m["fps"]], marker="x", s=80, color="black", label="Mask R-CNN R50-FPN")
    fps_axis.set(xlabel="input size (shorter side, px)", ylabel="frames per second (end to end)",
                 title=f"SparseInst on {results['machine']['device']}")
    latency_axis.set(xlabel="input size (shorter side, px)", ylabel="network latency (ms)", yscale="log")
    for axis in (fps_axis, latency_axis):
        axis.grid(alpha=0.3)
    fps_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(results, output_dir: Path) -> None:
    (output_dir / "benchmark.json").write_text(json.dumps(results, indent=2))
    report = markdown_report(results)
    (output_dir / "benchmark.md").write_text(report)
    plot(results, output_dir / "benchmark.png")
    print("\n" + report)
    print(f"wrote {output_dir / 'benchmark.json'}, benchmark.md and benchmark.png")


# --------------------------------------------------------------------------------------- presets doc
def presets_table(image_size: tuple[int, int] = (640, 864)) -> str:
    """Markdown table of every preset: backbone, decoder, parameters and FLOPs at `image_size`."""
    lines = [f"| preset | backbone | decoder | params (M) | GFLOPs at {image_size[0]}x{image_size[1]} |",
             "|---|---|---|---|---|"]
    example = torch.rand(1, 3, *image_size) * 255
    for name, config in PRESETS.items():
        model = build_model(name).eval()
        flops = count_flops(model, example)["total"]
        backbone = f"ResNet-{config.depth}{'-vd' if config.resnet_variant == 'd' else ''}"
        if any(config.deform_stages):
            backbone += " + DCN (res" + ",".join(str(i + 2) for i, d in enumerate(config.deform_stages) if d) + ")"
        decoder = {"iam": "IAM", "giam": "Group-IAM", "giam_soft": "softmax Group-IAM"}[config.decoder]
        decoder += f", {config.inst_convs}x{config.inst_dim}-ch convs"
        lines.append(f"| `{name}` | {backbone} | {decoder} | {count_parameters(model) / 1e6:.1f} | {flops / 1e9:.1f} |")
    return "\n".join(lines)


def write_presets_doc(path: str | Path = "docs/presets.md") -> Path:
    """Write `presets_table` with a short header to `path` (generated; do not edit by hand)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Presets\n\n"
                    "Generated by `python -m sparseinst_core.benchmark --write-presets-doc docs/presets.md`. "
                    "FLOPs = 2 x multiply-accumulates of one forward pass (80 classes, 100 queries), counted by "
                    "`torch.utils.flop_counter` with deformable convolutions added; 640x864 is a 480x640 frame "
                    "at the official test size (shorter side 640) padded to a multiple of 32.\n\n"
                    + presets_table() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparseinst_core.benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["r50_giam"], choices=list(PRESETS), metavar="PRESET",
                        help="presets to measure (default: r50_giam)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES),
                        help=f"input sizes, shorter side in px (default: {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, best kept (default 3)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved end-to-end rounds of all variants per size, for the ratios (0: none)")
    parser.add_argument("--output-dir", default="outputs/benchmark", help="where JSON, Markdown and PNG go")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime backend")
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip the Mask R-CNN peer")
    parser.add_argument("--no-profile", action="store_true", help="skip the convolution-efficiency profile")
    parser.add_argument("--write-presets-doc", metavar="PATH", help="only write the presets FLOPs/params table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_presets_doc:
        print(f"wrote {write_presets_doc(args.write_presets_doc)}")
        return 0
    if args.repeats < 1 or args.rounds < 0 or any(size < 32 for size in args.sizes):
        parser.error("--repeats must be >= 1, --rounds >= 0 and every size at least 32")
    run(args.presets, args.sizes, args.repeats, args.output_dir, device=args.device, onnx=not args.no_onnx,
        maskrcnn=not args.no_maskrcnn, profile=not args.no_profile, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
