"""SparseInst on a CUDA GPU, in one run that fits in 8 minutes: `make bench-gpu`, or
`python -m sparseinst_core.tools.benchmark_gpu --output-dir docs`.

1. Agreement with the CPU, on the shipped demo model (r18_giam trained on generated shapes) and generated
   480x640 scenes: fp32 raw outputs within 1e-3 relative of the CPU's (strict fp32, TF32 off; the figure
   with PyTorch's default TF32 convolutions is reported beside it), eager and replayed from a CUDA graph;
   fp16 instances with the CPU's labels and mask IoU >= 0.95.
2. Speed, end to end (`Predictor`: resize, copy to the GPU, network, post-processing of all 100 instances,
   instances on the host: scores, labels and mask crops) of r50_giam and r18_giam at 608 and 448 (shorter
   side of a 480x640 frame), fp32
   and fp16, eager (plain model, autocast) / optimised (`optimize_for_inference`) / optimised + CUDA graphs,
   batches of 1 and 4; the network alone (from a CPU batch, copy included) beside it.
3. The GPU's name, the versions, and every timing: gpu.json and gpu.md in --output-dir; the targets
   (r50_giam 608 fp16: one stream >= 446 FPS, batch 4 >= 1000 images/s) printed, not asserted.

Without CUDA it exits with status 2. Random weights for speed (it does not depend on them); the most
important rows run first, and rows left when --budget-seconds is spent are listed as skipped.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.synthetic import DEMO_STYLE, render_scene
from ..inference.backends import TorchBackend
from ..inference.predictor import Instances, Predictor
from ..io import demo_weights_path, load_model
from ..model import build_model, padded_shape, resized_shape
from .benchmark.measure import synchronize

CAMERA_SHAPE = (480, 640)
PRESETS = ("r50_giam", "r18_giam")
SIZES = (608, 448)
PRECISIONS = ("fp16", "fp32")
MODES = ("cuda_graphs", "optimized", "eager")
BATCHES = (1, 4)
FP32_TOLERANCE = 1e-3      # max relative error of raw outputs, CUDA vs CPU
FP16_MIN_IOU = 0.95        # mean mask IoU of fp16 instances against the CPU's fp32 ones
TARGETS = {"single_stream_fps": 446.0, "batch4_images_per_s": 1000.0}   # r50_giam 608 fp16
NO_CUDA_EXIT = 2


# ----------------------------------------------------------------------------------------- measuring
def time_calls(function, device: torch.device, min_seconds: float, min_calls: int) -> list[float]:
    """Seconds of each call of `function()`, GPU work included, until both `min_seconds` and `min_calls`.

    Every call is kept (the median and the spread go to the report), unlike `benchmark.measure.time_call`'s
    best of a fixed number: on a dedicated GPU machine the distribution is the result.
    """
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def relative_error(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """max over outputs of max |actual - expected| / max |expected|."""
    return max(((actual[k].float().cpu() - expected[k].float().cpu()).abs().max()
                / expected[k].float().abs().max().clamp(min=1e-12)).item() for k in expected)


def match_instances(actual: Instances, expected: Instances) -> dict:
    """Each expected instance against the actual one whose mask overlaps it most: IoUs and label agreement."""
    ious, same_label = [], []
    for mask, label in zip(expected.masks, expected.labels):
        if len(actual) == 0:
            ious.append(0.0)
            same_label.append(False)
            continue
        inter = np.logical_and(actual.masks, mask).sum(axis=(1, 2))
        union = np.logical_or(actual.masks, mask).sum(axis=(1, 2))
        overlap = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        best = int(np.argmax(overlap))
        ious.append(float(overlap[best]))
        same_label.append(bool(actual.labels[best] == label))
    return {"expected": len(expected), "actual": len(actual), "ious": ious, "same_label": same_label}


# ------------------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One preset x size x precision x mode x batch: end-to-end and network-only times per call."""

    preset: str
    size: int
    input: list[int]
    precision: str
    mode: str
    batch: int
    end_to_end_s: list[float] = field(default_factory=list)
    network_s: list[float] = field(default_factory=list)
    preprocess_s: list[float] = field(default_factory=list)   # resize and pad on the CPU
    instances: int = 0
    graph_captured: bool = False    # the cuda_graphs mode really replays a graph (a failed capture runs eagerly)
    skipped: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.batch / float(np.median(self.end_to_end_s)) if self.end_to_end_s else float("nan")

    def summary(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        e2e, net = 1e3 * np.array(self.end_to_end_s), 1e3 * np.array(self.network_s)
        return {"end_to_end_ms_median": float(np.median(e2e)), "end_to_end_ms_p90": float(np.percentile(e2e, 90)),
                "network_ms_median": float(np.median(net)),
                "preprocess_ms_median": float(1e3 * np.median(self.preprocess_s)), "images_per_s": self.images_per_s,
                "calls": len(e2e)}


def describe_machine(device: torch.device) -> dict:
    machine = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
               "platform": platform.platform()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        machine.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                       gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                       multiprocessors=properties.multi_processor_count, cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
        try:
            machine["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            machine["driver"] = None
    return machine


# ----------------------------------------------------------------------------------------- agreement
def demo_scenes(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng, *CAMERA_SHAPE, **DEMO_STYLE)[0] for _ in range(count)]


def set_tf32(allowed: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def check_agreement(device: torch.device, scenes: int = 8, reduced: str = "fp16") -> dict:
    """The demo model on `device` against the CPU: raw fp32 outputs (eager, optimised and replayed from a
    CUDA graph), and the instances in the `reduced` precision."""
    model, _ = load_model(demo_weights_path())
    model.eval()
    images = demo_scenes(scenes)
    cpu = Predictor(model, min_size=model.config.min_size_test, max_size=model.config.max_size_test, device="cpu")
    batch = cpu.batch([cpu.preprocess(image) for image in images])      # CPU (B, 3, H, W)
    with torch.inference_mode():
        reference = model(batch)
    result = {"scenes": scenes, "input": list(batch.shape[-2:]), "fp32": {}}
    default_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for label, tf32 in (("strict", False), ("tf32", True)):
        set_tf32(tf32)
        for optimize in (False, True):
            backend = TorchBackend(model, device=device, precision="fp32", optimize=optimize, cuda_graphs=optimize)
            outputs = [backend(batch) for _ in range(3)]   # eager, captured and replayed, replayed
            name = f"{label}_{'optimized_graphs' if optimize else 'eager'}"
            result["fp32"][name] = max(relative_error(o, reference) for o in outputs)
            if optimize:
                result["fp32"][f"{label}_graph_captured"] = bool(backend.graphs is not None and backend.graphs.graphs)
            del backend
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = default_tf32
    fast = Predictor(model, min_size=cpu.min_size, max_size=cpu.max_size, device=device, precision=reduced)
    matches = [match_instances(fast(image), cpu(image)) for image in images]
    ious = [iou for m in matches for iou in m["ious"]]
    labels = [same for m in matches for same in m["same_label"]]
    result["reduced"] = {"precision": reduced, "cpu_instances": sum(m["expected"] for m in matches),
                      "gpu_instances": sum(m["actual"] for m in matches),
                      "mask_iou_mean": float(np.mean(ious)) if ious else 1.0,
                      "mask_iou_min": float(np.min(ious)) if ious else 1.0,
                      "same_label": float(np.mean(labels)) if labels else 1.0}
    result["fp32_ok"] = all(v <= FP32_TOLERANCE for k, v in result["fp32"].items()
                            if k.startswith("strict_") and not k.endswith("captured"))
    result["reduced_ok"] = (result["reduced"]["mask_iou_mean"] >= FP16_MIN_IOU
                            and result["reduced"]["same_label"] == 1.0)
    return result


# --------------------------------------------------------------------------------------------- speed
def camera_frames(count: int, shape: tuple[int, int] = CAMERA_SHAPE) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(count)]


def build_predictor(model, size: int, precision: str, mode: str, device: torch.device) -> Predictor:
    max_size = int(size * 4 / 3 + 0.5)
    return Predictor(model, min_size=size, max_size=max_size, score_threshold=0.0, device=device,
                     precision=precision, optimize=mode != "eager", cuda_graphs=mode == "cuda_graphs")


def measure_row(row: Row, model, device: torch.device, seconds: float, min_calls: int,
                frame_shape: tuple[int, int] = CAMERA_SHAPE) -> None:
    predictor = build_predictor(model, row.size, row.precision, row.mode, device)
    frames = camera_frames(row.batch, frame_shape)
    call = (lambda: predictor(frames[0])) if row.batch == 1 else (lambda: predictor(frames))

    def preprocess() -> torch.Tensor:
        return predictor.batch([predictor.preprocess(frame) for frame in frames])   # CPU (B, 3, H, W)

    batch = preprocess()
    with torch.inference_mode():
        for _ in range(3):          # warm-up; the second call of a shape captures its CUDA graph
            call()
            predictor.backend(batch)
        row.end_to_end_s = time_calls(call, device, seconds, min_calls)
        row.network_s = time_calls(lambda: predictor.backend(batch), device, seconds / 2, min_calls)
        row.preprocess_s = time_calls(preprocess, torch.device("cpu"), seconds / 4, min_calls)
        result = call()
    row.instances = len(result) if row.batch == 1 else sum(len(r) for r in result)
    row.graph_captured = bool(predictor.backend.graphs is not None and predictor.backend.graphs.graphs)


def planned_rows(presets, sizes, precisions, modes, batches, frame_shape=CAMERA_SHAPE) -> list[Row]:
    """Every combination, the headline ones first (they lead each list)."""
    rows = []
    for size in sizes:
        for preset in presets:
            for precision in precisions:
                for mode in modes:
                    for batch in batches:
                        rows.append(Row(preset, size, list(padded_shape(*resized_shape(
                            *frame_shape, size, int(size * 4 / 3 + 0.5)))), precision, mode, batch))
    return rows


def measure_speed(rows: list[Row], device: torch.device, seconds: float, min_calls: int, budget_seconds: float,
                  frame_shape: tuple[int, int] = CAMERA_SHAPE, log=print) -> None:
    started = time.perf_counter()
    models: dict[str, torch.nn.Module] = {}
    for row in rows:
        if time.perf_counter() - started > budget_seconds:
            row.skipped = f"time budget of {budget_seconds:.0f} s spent"
            continue
        if row.preset not in models:
            torch.manual_seed(0)
            models[row.preset] = build_model(row.preset).eval().to(device)
        try:
            measure_row(row, models[row.preset], device, seconds, min_calls, frame_shape)
        except (RuntimeError, ValueError) as error:   # e.g. out of memory, a precision this GPU lacks
            row.skipped = f"{type(error).__name__}: {error}"
        log(f"{row.preset} {row.size} {row.precision} {row.mode} batch {row.batch}: "
            + (f"skipped ({row.skipped})" if row.skipped else
               f"{row.summary()['end_to_end_ms_median']:.2f} ms end to end, {row.images_per_s:.0f} images/s, "
               f"network {row.summary()['network_ms_median']:.2f} ms"))
        gc.collect()   # a torch backend and its graph runner refer to each other: free the graphs' memory now
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- reports
def headline(rows: list[Row]) -> dict:
    """The best r50_giam 608 fp16 rates over the modes, for batch 1 and 4."""
    def best(batch):
        rates = [r.images_per_s for r in rows
                 if (r.preset, r.size, r.precision, r.batch) == ("r50_giam", 608, "fp16", batch)
                 and not r.skipped and r.end_to_end_s]
        return max(rates) if rates else None
    return {"single_stream_fps": best(1), "batch4_images_per_s": best(4)}


def target_lines(results: dict) -> list[str]:
    lines = []
    for name, target in TARGETS.items():
        value = results["headline"].get(name)
        verdict = "not measured" if value is None else ("met" if value >= target else "MISSED")
        shown = "-" if value is None else f"{value:.0f}"
        lines.append(f"r50_giam 608 fp16 {name.replace('_', ' ')}: {shown} (target >= {target:.0f}): {verdict}")
    agreement = results["agreement"]
    if agreement:
        lines.append(f"agreement: fp32 within {FP32_TOLERANCE:g} relative: {'yes' if agreement['fp32_ok'] else 'NO'}; "
                     f"{agreement['reduced']['precision']} mask IoU >= {FP16_MIN_IOU} with the same labels: "
                     f"{'yes' if agreement['reduced_ok'] else 'NO'}")
    return lines


def markdown_report(results: dict) -> str:
    machine = results["machine"]
    lines = ["# SparseInst on a GPU", "",
             f"Generated by `make bench-gpu` ({results['date']}, {results['wall_seconds']:.0f} s). "
             f"GPU: {machine.get('gpu', '-')} (compute {machine.get('capability', '-')}, driver "
             f"{machine.get('driver', '-')}); torch {machine['torch']}, CUDA {machine.get('cuda', '-')}, cuDNN "
             f"{machine.get('cudnn', '-')}, Python {machine['python']}.", "",
             "## Targets", ""] + [f"- {line}" for line in target_lines(results)]
    agreement = results["agreement"]
    if agreement:
        lines += ["", "## Agreement with the CPU (demo model, generated 480x640 scenes)", "",
                  f"{agreement['scenes']} scenes at {agreement['input'][0]}x{agreement['input'][1]}. fp32: max "
                  "relative error of the raw outputs against the CPU's eager fp32 (strict: TF32 off; tf32: "
                  "PyTorch's default, TF32 convolutions):", "", "| path | max rel. error |", "|---|---|"]
        lines += [f"| {name} | {value:.1e} |" for name, value in agreement["fp32"].items()
                  if not name.endswith("captured")]
        reduced = agreement["reduced"]
        lines += ["", f"{reduced['precision']} (optimised, CUDA graphs) against CPU fp32: {reduced['gpu_instances']} "
                  f"instances vs {reduced['cpu_instances']}; mask IoU mean {reduced['mask_iou_mean']:.4f} (min "
                  f"{reduced['mask_iou_min']:.3f}); same label {100 * reduced['same_label']:.0f}%."]
    lines += ["", "## End-to-end speed (random weights, all 100 instances post-processed)", "",
              "End to end = `Predictor(frame)` on a 480x640 frame (or a list of 4): resize, copy, network, "
              "post-processing, instances (mask crops) on the host; median per call. Network = the backend on a "
              "CPU batch, copy included; preprocess = resize and pad on the CPU (part of end to end).", "",
              "| preset | size | input | precision | mode | batch | end-to-end ms | images/s | network ms "
              "| preprocess ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        s = row["summary"]
        if "skipped" in s:
            lines.append(f"| {row['preset']} | {row['size']} | {row['input'][0]}x{row['input'][1]} | "
                         f"{row['precision']} | {row['mode']} | {row['batch']} | skipped: {s['skipped']} | | | |")
            continue
        mode = row["mode"] + (" (capture failed: eager)" if row["mode"] == "cuda_graphs" and not row["graph_captured"]
                              else "")
        lines.append(f"| {row['preset']} | {row['size']} | {row['input'][0]}x{row['input'][1]} | {row['precision']} | "
                     f"{mode} | {row['batch']} | {s['end_to_end_ms_median']:.2f} | {s['images_per_s']:.0f} | "
                     f"{s['network_ms_median']:.2f} | {s['preprocess_ms_median']:.2f} |")
    lines += ["", "Raw per-call times: gpu.json beside this page.", ""]
    return "\n".join(lines)


def run(device: torch.device, output_dir: str | Path, presets=PRESETS, sizes=SIZES, precisions=PRECISIONS,
        modes=MODES, batches=BATCHES, seconds: float = 1.0, min_calls: int = 10, budget_seconds: float = 360.0,
        agreement: bool = True, frame_shape: tuple[int, int] = CAMERA_SHAPE, log=print) -> dict:
    """Agreement, then speed on `frame_shape` frames; writes gpu.json and gpu.md to `output_dir`; returns the
    results."""
    started = time.perf_counter()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": describe_machine(device), "agreement": None}
    if agreement:
        log("agreement with the CPU on the demo model ...")
        results["agreement"] = check_agreement(device, reduced="fp16" if device.type == "cuda" else "bf16")
        log(json.dumps(results["agreement"], indent=1))
    rows = planned_rows(presets, sizes, precisions, modes, batches, frame_shape)
    measure_speed(rows, device, seconds, min_calls, budget_seconds, frame_shape, log=log)
    results["rows"] = [{**asdict(row), "summary": row.summary()} for row in rows]
    results["headline"] = headline(rows)
    results["wall_seconds"] = time.perf_counter() - started
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "gpu.json").write_text(json.dumps(results, indent=1))
    report = markdown_report(results)
    (output_dir / "gpu.md").write_text(report)
    log("\n" + "\n".join(target_lines(results)))
    log(f"wrote {output_dir / 'gpu.md'} and gpu.json")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparseinst_core.tools.benchmark_gpu",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="docs", help="where gpu.json and gpu.md go (default: docs)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row (default 1)")
    parser.add_argument("--budget-seconds", type=float, default=360.0,
                        help="rows still to run after this many seconds of speed measurement are skipped (default 360)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmark_gpu needs a CUDA GPU, and PyTorch sees none here (torch.cuda.is_available() is False); "
              "run `make bench-gpu` on a GPU machine (docs/gpu.md)", file=sys.stderr)
        return NO_CUDA_EXIT
    results = run(torch.device("cuda"), args.output_dir, presets=args.presets, sizes=args.sizes,
                  seconds=args.seconds, budget_seconds=args.budget_seconds)
    agreement = results["agreement"]
    return 0 if agreement["fp32_ok"] and agreement["reduced_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
