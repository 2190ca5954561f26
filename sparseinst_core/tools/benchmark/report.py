"""What the benchmark writes: benchmark.json (the results, `dataclasses.asdict`), benchmark.md, benchmark.png,
and the presets table of docs/presets.md. matplotlib is imported only where the plot is drawn.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ...model import PRESETS, build_model
from .measure import count_flops, count_parameters
from .results import BenchmarkResults, VariantResult


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_summary(row: VariantResult) -> str:
    """One line of progress for a measured variant."""
    stages = f"backbone {_fmt(row.backbone_ms)} encoder {_fmt(row.encoder_ms)} decoder {_fmt(row.decoder_ms)}"
    return (f"{stages} | network {_fmt(row.network_ms)} ms, post {_fmt(row.postprocess_ms)} ms "
            f"({100 * row.postprocess_share:.1f}%), end-to-end {_fmt(row.end_to_end_ms)} ms = "
            f"{row.fps:.2f} FPS, {100 * row.fraction_of_peak:.0f}% of matmul peak")


def markdown_report(results: BenchmarkResults) -> str:
    machine = results.machine
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results.matmul_peak_gflops.items())
    lines = ["# SparseInst benchmark", "",
             f"Device: {machine.device} ({machine.processor}, {machine.torch_threads} torch threads, "
             f"torch {machine.torch}). Measured matrix-multiply peak: {peaks}.", "",
             "Latency in ms (best of the repeats), input = a 480x640 frame resized to the size (shorter side) and "
             "padded; post-processing with 100 instances; end-to-end = `Predictor(image)`.", "",
             "| preset | backend | precision | size | input | backbone | encoder | decoder | network | post | "
             "post % | end-to-end | FPS | GFLOPs | % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.preset} | {r.backend} | {r.precision} | {r.size} | {r.input[0]}x{r.input[1]} | "
              f"{_fmt(r.backbone_ms)} | {_fmt(r.encoder_ms)} | {_fmt(r.decoder_ms)} | {_fmt(r.network_ms)} | "
              f"{_fmt(r.postprocess_ms)} | {100 * r.postprocess_share:.1f} | {_fmt(r.end_to_end_ms)} | {r.fps:.2f} | "
              f"{r.gflops:.1f} | {100 * r.fraction_of_peak:.0f} |" for r in results.rows]
    lines += fastest_paths(results.rows)
    if results.ratios:
        lines += ["", "## Speed-ups (throughput ratios)", "",
                  "End-to-end interleaved: the median over rounds in which every variant ran once in turn, so both "
                  "sides of a ratio saw the same machine load (min..max over the rounds); best-of: the ratio of the "
                  "separately measured best times of the table above.", "",
                  "| preset | size | ratio | end-to-end, interleaved (min..max) | end-to-end, best-of | network |",
                  "|---|---|---|---|---|---|"]
        for r in results.ratios:
            interleaved = "-"
            if r.end_to_end_interleaved is not None:
                low, high = r.end_to_end_interleaved_range
                interleaved = f"**{r.end_to_end_interleaved:.2f}x** ({low:.2f}..{high:.2f})"
            lines.append(f"| {r.preset} | {r.size} | {r.ratio} | {interleaved} | {r.end_to_end:.2f}x | "
                         f"{r.network:.2f}x |")
    if results.conv_efficiency:
        lines += ["", "## Convolutions against the matmul peak (optimised torch, largest size)", "",
                  "| preset | size | precision | network ms | conv share of time | conv GFLOP/s | % of peak |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.preset} | {r.size} | {r.precision} | {r.network_ms:.1f} | {100 * r.conv_time_share:.0f}% | "
                  f"{r.conv_gflops_per_s:.0f} | {100 * r.conv_fraction_of_peak:.0f} |" for r in results.conv_efficiency]
    if results.agreement:
        lines += ["", "## Agreement with the plain eager fp32 model (same random weights and frame)", "",
                  "| preset | size | path | max rel. error of raw outputs | mask IoU mean (min) | same label | "
                  "max score diff |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {a.preset} | {a.size} | {a.backend} {a.precision} | {a.max_relative_error:.1e} | "
                  f"{a.mask_iou_mean:.4f} ({a.mask_iou_min:.3f}) | {100 * a.label_agreement:.0f}% | "
                  f"{a.score_max_abs_diff:.1e} |" for a in results.agreement]
    if results.maskrcnn:
        lines += ["", "## Peer: torchvision maskrcnn_resnet50_fpn (eager fp32, 100 detections)", "",
                  "| size | input | end-to-end ms | FPS | GFLOPs | params (M) |", "|---|---|---|---|---|---|"]
        lines += [f"| {m.size} | {m.input[0]}x{m.input[1]} | {m.end_to_end_ms:.1f} | {m.fps:.2f} | "
                  f"{m.gflops:.1f} | {m.params_m:.1f} |" for m in results.maskrcnn]
    lines += ["", "FLOPs = 2 x multiply-accumulates, counted by `torch.utils.flop_counter` (+ deformable convs).", ""]
    return "\n".join(lines)


def fastest_paths(rows: list[VariantResult]) -> list[str]:
    """Markdown lines naming the fastest path (lowest end-to-end, batch 1) of each preset and device, at each
    size and over all sizes, with its post-processing share."""
    single = [r for r in rows if r.batch == 1]
    if not single:
        return []
    lines = ["", "## Fastest path per preset", "",
             "Lowest end-to-end latency (best of the repeats) among the paths measured, batch 1.", "",
             "| preset | device | size | fastest path | end-to-end ms | FPS | post % | next fastest |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[VariantResult]] = {}
    for r in single:
        groups.setdefault((r.preset, r.device, r.size), []).append(r)
        groups.setdefault((r.preset, r.device, "any"), []).append(r)
    for (preset, device, size), candidates in groups.items():
        best, *others = sorted(candidates, key=lambda r: r.end_to_end_ms)
        runner_up = (f"{others[0].backend} {others[0].precision}" + (f" at {others[0].size}" if size == "any" else "")
                     + f" ({others[0].end_to_end_ms:.1f} ms)") if others else "-"
        lines.append(f"| {preset} | {device} | {size} | **{best.backend} {best.precision}**"
                     + (f" at {best.size}" if size == "any" else "")
                     + f" | {best.end_to_end_ms:.1f} | {best.fps:.2f} | {100 * best.postprocess_share:.1f} "
                     f"| {runner_up} |")
    return lines


def plot(results: BenchmarkResults, path: Path) -> None:
    """FPS and network latency against input size, one line per preset, backend and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (fps_axis, latency_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[str, str, str], list[VariantResult]] = {}
    for row in results.rows:
        series.setdefault((row.preset, row.backend, row.precision), []).append(row)
    for (preset, backend, precision), rows in series.items():
        rows = sorted(rows, key=lambda r: r.size)
        sizes = [r.size for r in rows]
        label = f"{preset} {backend} {precision}"
        fps_axis.plot(sizes, [r.fps for r in rows], marker="o", label=label)
        latency_axis.plot(sizes, [r.network_ms for r in rows], marker="o", label=label)
    for peer in results.maskrcnn:
        fps_axis.scatter([peer.size], [peer.fps], marker="x", s=80, color="black", label="Mask R-CNN R50-FPN")
    fps_axis.set(xlabel="input size (shorter side, px)", ylabel="frames per second (end to end)",
                 title=f"SparseInst on {results.machine.device}")
    latency_axis.set(xlabel="input size (shorter side, px)", ylabel="network latency (ms)", yscale="log")
    for axis in (fps_axis, latency_axis):
        axis.grid(alpha=0.3)
    fps_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(results: BenchmarkResults, output_dir: str | Path) -> None:
    """benchmark.json, benchmark.md and (where matplotlib is installed) benchmark.png in `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(results.to_dict(), indent=2))
    report = markdown_report(results)
    (output_dir / "benchmark.md").write_text(report)
    written = ["benchmark.json", "benchmark.md"]
    try:
        plot(results, output_dir / "benchmark.png")
        written.append("benchmark.png")
    except ImportError as error:   # a GPU machine may have no matplotlib: the numbers are all in the other two
        print(f"no plot: {error}", file=sys.stderr)
    print("\n" + report)
    print(f"wrote {', '.join(written)} to {output_dir}")


def read_results(path: str | Path) -> BenchmarkResults:
    """A benchmark.json written by `write_reports`."""
    return BenchmarkResults.from_dict(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------- presets doc
def presets_table(image_size: tuple[int, int] = (640, 864)) -> str:
    """Markdown table of every preset: backbone, decoder, parameters and FLOPs at `image_size`."""
    lines = [f"| preset | backbone | decoder | params (M) | GFLOPs at {image_size[0]}x{image_size[1]} |",
             "|---|---|---|---|---|"]
    example = torch.rand(1, 3, *image_size) * 255
    for name, config in PRESETS.items():
        model = build_model(name).eval()
        flops = count_flops(model, example).total
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
