"""One benchmark run: the matrix-multiply peaks once, then for each preset and size every variant that
runs here, the agreement checks, the interleaved rounds and the convolution rates; the Mask R-CNN peer
last. Returns the typed results; `report` writes them.
"""
from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import torch

from ...inference.device import resolve_device
from ...model import build_model
from .measure import calibrate_batch_norm, count_flops, count_parameters, matmul_peaks
from .report import row_summary
from .results import Agreement, BenchmarkResults, Machine, NetworkCost, VariantResult
from .variants import (REFERENCE, Variant, Workload, agreement, available_variants, convolution_efficiency,
                       input_geometry, interleaved_end_to_end, measure_maskrcnn, measure_variant, speed_ups)

DEFAULT_SIZES = (448, 512, 608, 640)


def describe_machine(device: torch.device) -> Machine:
    return Machine(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                   device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   torch_threads=torch.get_num_threads(), torch=torch.__version__)


def measure_variants(workload: Workload, variants: list[Variant], device: torch.device, repeats: int,
                     peaks: dict[str, float], export_dir: Path,
                     rounds: int) -> tuple[list[VariantResult], list[Agreement]]:
    """Every variant on one preset and size, each checked against the reference, then `rounds` interleaved rounds."""
    measured = []
    for variant in variants:
        print(f"{workload.preset} {workload.geometry.size} {variant.name} ...", flush=True)
        try:
            entry = measure_variant(variant, workload, device, repeats, peaks, export_dir)
        except (RuntimeError, ValueError) as error:  # e.g. an op an exporter or provider lacks
            print(f"  skipped: {error}", file=sys.stderr)
            continue
        measured.append(entry)
        print("  " + row_summary(entry.result), flush=True)
    reference = next((m for m in measured if f"{m.result.backend} {m.result.precision}" == REFERENCE.name), None)
    checks = [] if reference is None else [agreement(m, reference, workload.geometry)
                                           for m in measured if m is not reference]
    if rounds:
        print(f"{workload.preset} {workload.geometry.size}: {rounds} interleaved rounds of every variant ...",
              flush=True)
        interleaved_end_to_end(measured, device, rounds)
    return [m.result for m in measured], checks


def run_benchmark(presets, sizes=DEFAULT_SIZES, repeats: int = 3, device="auto", skip_backends=(),
                  maskrcnn: bool = True, profile: bool = True, rounds: int = 7) -> BenchmarkResults:
    """Measure `presets` at `sizes` (shorter side, px) on `device`, best of `repeats` calls per figure.

    skip_backends: backends of `variants.VARIANTS` left out; profile: the convolution rates at the
    largest size; rounds: interleaved end-to-end rounds per size, for the speed-up ratios (0: none).
    """
    device = resolve_device(device)
    machine = describe_machine(device)
    variants = available_variants(device, skip_backends)
    print(f"measuring the matrix-multiply peak on {machine.device} ...", flush=True)
    peaks = matmul_peaks(device, ["fp32"] + [v.precision for v in variants])
    for precision, gflops in peaks.items():
        print(f"  {precision} matmul peak: {gflops:.0f} GFLOP/s")
    results = BenchmarkResults(machine=machine, matmul_peak_gflops=peaks)
    optimized_precisions = [v.precision for v in variants if v.backend == "optimized"]

    with tempfile.TemporaryDirectory(prefix="sparseinst_bench_") as export_dir:   # exports are large: not kept
        for preset in presets:
            torch.manual_seed(0)     # the same random weights for a preset, whatever ran before it
            model = build_model(preset).eval().to(device)
            calibration = torch.rand(2, 3, 256, 352, generator=torch.Generator().manual_seed(0)).to(device) * 255
            calibrate_batch_norm(model, calibration)
            for size in sizes:
                geometry = input_geometry(size)
                flops = count_flops(model, torch.rand(1, 3, *geometry.padded, device=device) * 255)
                results.flops.append(NetworkCost(preset=preset, size=size, params_m=count_parameters(model) / 1e6,
                                                 gflops=flops.total / 1e9, conv_gflops=flops.conv / 1e9))
                workload = Workload(preset, model, geometry, flops)
                rows, checks = measure_variants(workload, variants, device, repeats, peaks, Path(export_dir), rounds)
                results.rows += rows
                results.agreement += checks
                if profile and size == max(sizes):
                    for rate in convolution_efficiency(workload, device, optimized_precisions, peaks):
                        print(f"  conv efficiency {rate.precision}: {100 * rate.conv_time_share:.0f}% of the time "
                              f"in convs, {rate.conv_gflops_per_s:.0f} GFLOP/s = "
                              f"{100 * rate.conv_fraction_of_peak:.0f}% of the matmul peak")
                        results.conv_efficiency.append(rate)
            del model
    if maskrcnn:
        print(f"maskrcnn_resnet50_fpn {max(sizes)} ...", flush=True)
        results.maskrcnn.append(measure_maskrcnn(input_geometry(max(sizes)), device, repeats))
    results.ratios = speed_ups(results.rows)
    return results
