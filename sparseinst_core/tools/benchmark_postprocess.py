"""Post-processing before and after masks are pasted into crops, on this machine:
`python -m sparseinst_core.tools.benchmark_postprocess`.

"Before" is the fast path of commit a80421d, `postprocess(..., sort=True)`: every mask above the score
threshold resized to the whole image (`predict_full_masks` runs a predictor that way). "After" is what
the predictor does now, `postprocess_crops`: `max_instances` first, each mask pasted into crops that hold
every pixel it can set. Both with score_threshold 0, so all 100 queries are kept.

1. Agreement: scores, labels, masks and the node's label image, after against before, on the shipped demo
   model (generated scenes in its training style) and on random-weights r50_giam at 640.
2. Speed at a 480x640 camera frame, interleaved rounds (every variant once per round, medians of the
   rounds): network, post-processing and end-to-end, for each preset, backend and precision. Masks of
   two kinds: the preset's random weights (noise over the whole frame: the worst case for crops) and the
   trained demo model's at the same input size (objects). For r18_giam (the demo model's preset) the
   trained end-to-end is measured; for r50_giam it is its network plus the trained masks' post-processing.
3. A 4000x3000 frame: time and peak resident-memory growth of post-processing plus the label image,
   before and after, each in a fresh process.

Prints the numbers and the issue's targets beside them (targets are printed, never asserted).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data.synthetic import DEMO_STYLE, render_scene
from ..inference import Instances, Predictor, load_predictor
from ..inference.defaults import MASK_THRESHOLD, MAX_INSTANCES
from ..inference.label_image import label_instances
from ..inference.mask_paste import axis_maps
from ..inference.postprocess import image_window, postprocess, postprocess_crops, scored_queries
from ..model import build_model
from .benchmark.measure import calibrate_batch_norm
from .benchmark.variants import CAMERA_SHAPE, camera_image, input_geometry, native_bf16

LARGE_FRAME = (3000, 4000)
# (preset, input size, backend, precision): the CPU paths of the targets
CPU_ENGINES = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"))
PATHS = [(preset, 640, backend, precision) for preset in ("r50_giam", "r18_giam") for backend, precision in CPU_ENGINES]
PATHS.append(("r18_giam", 448, "torch", "bf16"))


# ------------------------------------------------------------------------------------------ pieces
def scene(seed: int = 0, shape: tuple[int, int] = CAMERA_SHAPE) -> np.ndarray:
    """A generated scene in the demo model's training style, uint8 (H, W, 3)."""
    return render_scene(np.random.default_rng(seed), *shape, **DEMO_STYLE)[0]


def random_model(preset: str) -> torch.nn.Module:
    """Random weights with batch norms calibrated as trained ones (`calibrate_batch_norm`)."""
    torch.manual_seed(0)
    model = build_model(preset, num_classes=80)
    images = torch.rand(2, 3, 256, 352, generator=torch.Generator().manual_seed(0)) * 255
    return calibrate_batch_norm(model, images).eval()


def predictor_for(model, size: int, backend: str, precision: str, export_dir: Path) -> Predictor:
    """A predictor at shorter side `size` (longer side 4/3 of it) keeping every query above score 0."""
    geometry = input_geometry(size)
    options = dict(min_size=size, max_size=geometry.max_size, score_threshold=0.0, device="cpu", precision=precision)
    if backend in ("onnxruntime", "openvino"):
        height, width = geometry.padded
        options.update(backend=backend, input_size=(height, width),         # a file per model and size
                       onnx_path=export_dir / f"{id(model)}_{height}x{width}.onnx")
    return Predictor(model, **options)


def demo_model() -> torch.nn.Module:
    return load_predictor("demo", device="cpu").predictor.model


@torch.inference_mode()
def raw_outputs(predictor: Predictor, image: np.ndarray) -> tuple:
    """The arguments of the post-processing procedures for one image (score threshold 0)."""
    tensor = predictor.preprocess(image)
    batch = predictor.batch([tensor])
    outputs = predictor.backend(batch.to(predictor.device))
    return (outputs["pred_logits"][0], outputs["pred_scores"][0], outputs["pred_masks"][0], tuple(batch.shape[-2:]),
            tuple(tensor.shape[-2:]), image.shape[:2], 0.0, MASK_THRESHOLD)


def post_before(arguments) -> Instances:
    scores, labels, masks = postprocess(*arguments, sort=True)
    return Instances(scores.cpu().numpy(), labels.cpu().numpy(), masks.cpu().numpy())


def post_after(arguments) -> Instances:
    scores, labels, crops = postprocess_crops(*arguments, max_instances=MAX_INSTANCES)
    return Instances(scores.cpu().numpy(), labels.cpu().numpy(), mask_crops=crops.numpy())


@torch.inference_mode()
def predict_full_masks(predictor: Predictor, image: np.ndarray) -> Instances:
    """`predictor(image)` as before crops: every kept mask resized to the whole image."""
    return post_before(raw_outputs(predictor, image)[:6] + (predictor.score_threshold, predictor.mask_threshold))


def interleaved(functions: dict, rounds: int, clock=time.perf_counter) -> dict[str, float]:
    """Median time (ms) of each function over `rounds` rounds, each round calling every one once."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, function in functions.items():
                start = clock()
                function()
                times[name].append(1e3 * (clock() - start))
    return {name: statistics.median(values) for name, values in times.items()}


# wall: what a caller waits; cpu: the process's processor time, which other work on a shared machine does
# not inflate (with one thread: with several, idle threads' spinning counts too)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


# ------------------------------------------------------------------------------------------ agreement
def agreement(arguments) -> dict:
    """After against before on one image: identical scores/labels, differing mask pixels and where."""
    before, after = post_before(arguments), post_after(arguments)
    masks_before, masks_after = before.masks, after.masks
    differs = masks_before != masks_after                                   # (K, H, W)
    instance, ys, xs = np.nonzero(differs)
    return {"instances": len(before), "same_scores": bool(np.array_equal(before.scores, after.scores)),
            "same_labels": bool(np.array_equal(before.labels, after.labels)),
            "differing_pixels": int(differs.sum()), "mask_pixels": int(differs.size),
            "differing_fraction": float(differs.mean()),
            "on_boundary": float(on_boundary(masks_before, instance, ys, xs).mean()) if len(ys) else None,
            "max_distance_to_threshold": float(np.abs(resized_probabilities(arguments, instance, ys, xs)
                                                      - MASK_THRESHOLD).max()) if len(ys) else None,
            "set_outside_crops": int((masks_before & ~crop_cover(after)).sum()),
            "label_image_differing_fraction": float(
                (label_instances(before).label_image != label_instances(after).label_image).mean()),
            "crop_pixels_per_image": after.mask_crops.values.size / (masks_before.shape[1] * masks_before.shape[2])}


def resized_probabilities(arguments, instance, ys, xs) -> np.ndarray:
    """The single resize's probability at pixels (y, x) of the instances (in score order)."""
    scores, _, mask_probs, _ = scored_queries(*arguments[:4], *arguments[6:])
    order = torch.argsort(scores, descending=True, stable=True)
    probs = image_window(mask_probs[order], arguments[4]).numpy()           # (K, rows, cols)
    rows, cols = axis_maps(tuple(arguments[5]), tuple(arguments[4]), probs.shape[-2:])
    fy, fx = rows.fraction[ys], cols.fraction[xs]
    return ((1 - fy) * (1 - fx) * probs[instance, rows.lower[ys], cols.lower[xs]]
            + (1 - fy) * fx * probs[instance, rows.lower[ys], cols.upper[xs]]
            + fy * (1 - fx) * probs[instance, rows.upper[ys], cols.lower[xs]]
            + fy * fx * probs[instance, rows.upper[ys], cols.upper[xs]])


def on_boundary(masks: np.ndarray, instance, ys, xs) -> np.ndarray:
    """Whether each pixel has a 4-neighbour (inside the image) of another value in its instance's mask."""
    height, width = masks.shape[1:]
    value = masks[instance, ys, xs]
    result = np.zeros(len(ys), dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        y, x = np.clip(ys + dy, 0, height - 1), np.clip(xs + dx, 0, width - 1)
        result |= masks[instance, y, x] != value
    return result


def crop_cover(result: Instances) -> np.ndarray:
    """(K, H, W) bool: the pixels inside each instance's crops."""
    crops = result.mask_crops
    cover = np.zeros((crops.num_instances, *crops.image_size), dtype=bool)
    for instance, (x0, y0, x1, y1) in zip(crops.instances.tolist(), crops.boxes.tolist()):
        cover[instance, y0:y1, x0:x1] = True
    return cover


def agreement_report(scenes: int, preset: str, size: int) -> dict:
    """Agreement on the demo model (generated scenes, its test size) and on random weights of `preset`."""
    demo = load_predictor("demo", score_threshold=0.0, device="cpu").predictor
    with tempfile.TemporaryDirectory() as export_dir:
        random = predictor_for(random_model(preset), size, "torch", "fp32", Path(export_dir))
    return {"demo model": [agreement(raw_outputs(demo, scene(seed))) for seed in range(scenes)],
            f"{preset} random weights at {size}": [agreement(raw_outputs(random, camera_image()))]}


# ------------------------------------------------------------------------------------------ speed
def speed(paths, rounds: int, export_dir: Path, clock=time.perf_counter) -> list[dict]:
    """Network, post-processing and end-to-end medians (ms) of each path, before and after."""
    image, demo, models, rows = scene(), demo_model(), {}, []
    for preset, size, backend, precision in paths:
        row = {"preset": preset, "size": size, "backend": backend, "precision": precision}
        skip = native_bf16(torch.device("cpu")) if precision == "bf16" else None
        if skip:
            rows.append({**row, "skipped": skip})
            continue
        model = models.setdefault(preset, random_model(preset))
        predictor = predictor_for(model, size, backend, precision, export_dir)
        # The demo model is an r18_giam: for that preset its own predictor on this path is the trained case.
        trained = predictor_for(demo, size, backend, precision, export_dir) if preset == demo.preset else None
        random_arguments = raw_outputs(predictor, image)
        trained_arguments = raw_outputs(trained or predictor_for(demo, size, "torch", "fp32", export_dir), image)
        batch = predictor.batch([predictor.preprocess(image)])
        functions = {"network": lambda: predictor.backend(batch),
                     "post before (random)": lambda: post_before(random_arguments),
                     "post after (random)": lambda: post_after(random_arguments),
                     "post before (trained)": lambda: post_before(trained_arguments),
                     "post after (trained)": lambda: post_after(trained_arguments),
                     "e2e before (random)": lambda: predict_full_masks(predictor, image),
                     "e2e after (random)": lambda: predictor(image)}
        if trained is not None:
            functions.update({"e2e before (trained)": lambda: predict_full_masks(trained, image),
                              "e2e after (trained)": lambda: trained(image)})
        row.update(interleaved(functions, rounds, clock))
        if trained is None:      # r50_giam: its network and the rest of the predictor, with trained masks
            for when in ("before", "after"):
                row[f"e2e {when} (trained)"] = (row[f"e2e {when} (random)"] - row[f"post {when} (random)"]
                                                + row[f"post {when} (trained)"])
            row["trained e2e"] = "network + trained masks' post-processing"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ large frame
def resident_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def large_frame_probe(workload: str, when: str, shape: tuple[int, int], clock=time.perf_counter) -> dict:
    """In this (fresh) process: post-processing, then the label image, of one `shape` frame, each with the
    peak growth of resident memory over what was there before it (Linux: VmHWM reset via clear_refs)."""
    image = scene(0, shape)
    if workload == "demo":
        predictor = load_predictor("demo", score_threshold=0.0, device="cpu").predictor
    else:                                                                   # "<preset>@<size>", random weights
        preset, size = workload.split("@")
        with tempfile.TemporaryDirectory() as export_dir:
            predictor = predictor_for(random_model(preset), int(size), "torch", "fp32", Path(export_dir))
    arguments = raw_outputs(predictor, image)
    with torch.inference_mode():
        post_seconds, post_peak, result = peak_growth(lambda: (post_before if when == "before" else post_after)(arguments), clock)
        label_seconds, label_peak, labels = peak_growth(lambda: label_instances(result), clock)
    return {"workload": workload, "when": when, "shape": list(shape), "instances": len(result), "labelled": len(labels),
            "post_seconds": post_seconds, "post_peak_growth_mib": post_peak,
            "label_seconds": label_seconds, "label_peak_growth_mib": label_peak}


def peak_growth(function, clock) -> tuple[float, float, object]:
    """Seconds of `function()`, the peak growth (MiB) of resident memory while it ran, and its result."""
    Path("/proc/self/clear_refs").write_text("5")                          # peak resident := resident now
    resident = resident_kib("VmRSS")
    start = clock()
    result = function()
    seconds = clock() - start
    return seconds, (resident_kib("VmHWM") - resident) / 1024, result


def large_frame(shape: tuple[int, int], random: str, options: list[str]) -> list[dict]:
    """Each probe in a fresh process, so that memory freed by one cannot hide the other's peak; masks of
    the demo model and of `random` ("<preset>@<size>": random weights at that input size)."""
    results = []
    for workload in ("demo", random):
        for when in ("after", "before"):
            command = [sys.executable, "-m", __spec__.name, *options,
                       "--large-frame-probe", workload, when, f"{shape[0]}x{shape[1]}"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    return results



# ------------------------------------------------------------------------------------------ report
def report(agreements: dict, speeds: list[dict], large: list[dict]) -> str:
    lines = ["## Agreement: after (crops) against before (full-image masks), score threshold 0", ""]
    for name, results in agreements.items():
        differing, pixels = sum(r["differing_pixels"] for r in results), sum(r["mask_pixels"] for r in results)
        flipped = [r for r in results if r["differing_pixels"]]
        lines.append(
            f"- {name}: {len(results)} image(s), {sum(r['instances'] for r in results)} instances; scores identical "
            f"{sum(r['same_scores'] for r in results)}/{len(results)}, labels {sum(r['same_labels'] for r in results)}/"
            f"{len(results)}; mask pixels differing {differing} of {pixels} ({differing / pixels:.2e})"
            + (f", {100 * statistics.fmean(r['on_boundary'] for r in flipped):.0f}% on a mask boundary, at most "
               f"{max(r['max_distance_to_threshold'] for r in flipped):.1e} from the threshold" if flipped else "")
            + f"; set pixels outside the crops {sum(r['set_outside_crops'] for r in results)}; label image pixels "
            f"differing {statistics.fmean(r['label_image_differing_fraction'] for r in results):.2e}; crops hold "
            f"{statistics.fmean(r['crop_pixels_per_image'] for r in results):.2f} image areas of pixels "
            f"(before: {statistics.fmean(r['instances'] for r in results):.0f})")
    lines += ["", "## Speed at a 480x640 frame: medians of interleaved rounds, ms (before -> after)", "",
              "| path | network | post, random masks | end-to-end, random | post, trained masks | end-to-end, trained "
              "| post share after: random / trained |", "|---|---|---|---|---|---|---|"]
    for row in speeds:
        path = f"{row['preset']} {row['size']} {row['backend']} {row['precision']}"
        if "skipped" in row:
            lines.append(f"| {path} | skipped: {row['skipped']} | | | | | |")
            continue
        cells = [f"{row['network']:.1f}"]
        for masks in ("random", "trained"):
            for stage in ("post", "e2e"):
                before, after = row[f"{stage} before ({masks})"], row[f"{stage} after ({masks})"]
                cells.append(f"{before:.1f} -> {after:.1f} ({before / after:.2f}x)")
        shares = [row[f"post after ({m})"] / row[f"e2e after ({m})"] for m in ("random", "trained")]
        lines.append(f"| {path} | " + " | ".join(cells) + f" | {100 * shares[0]:.1f}% / {100 * shares[1]:.1f}% |")
    lines += ["", "Trained masks: the demo model's (an r18_giam) at the same input size; for r50_giam the trained "
              "end-to-end is its network and predictor with the trained masks' post-processing.", "",
              "## Targets (issue 13)", ""]
    for row in speeds:
        if "skipped" not in row and row["size"] == 640:
            share = row["post after (trained)"] / row["e2e after (trained)"]
            worst = row["post after (random)"] / row["e2e after (random)"]
            lines.append(f"- post-processing <= 10% of end-to-end, {row['preset']} {row['backend']} {row['precision']} "
                         f"at 640: {100 * share:.1f}% with trained masks, {100 * worst:.1f}% with random-weight masks "
                         f"({'met' if share <= 0.1 else 'not met'} / {'met' if worst <= 0.1 else 'not met'})")
    for row in speeds:
        if row["size"] == 448 and row["precision"] == "bf16":
            lines.append("- r18_giam bf16 at 448, end-to-end >= 1.6x before: " + (
                f"not measured ({row['skipped']})" if "skipped" in row else
                f"{row['e2e before (trained)'] / row['e2e after (trained)']:.2f}x trained, "
                f"{row['e2e before (random)'] / row['e2e after (random)']:.2f}x random weights"))
    lines += ["", "## One large frame, score threshold 0 (before and after each in a fresh process): seconds, "
              "peak growth of resident memory (MiB)", "",
              "| masks | frame | instances | post-processing before -> after | label image before -> after |",
              "|---|---|---|---|---|"]
    for workload in dict.fromkeys(r["workload"] for r in large):
        runs = {r["when"]: r for r in large if r["workload"] == workload}
        cells = [" -> ".join(f"{runs[when][f'{step}_seconds']:.2f} s, {runs[when][f'{step}_peak_growth_mib']:.0f} MiB"
                             for when in ("before", "after")) for step in ("post", "label")]
        shape = "x".join(str(v) for v in runs["after"]["shape"][::-1])
        lines.append(f"| {'demo model' if workload == 'demo' else workload + ', random weights'} | {shape} | "
                     f"{runs['after']['instances']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def parse_shape(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.split("x"))
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Post-processing before and after masks are pasted into crops.")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the speed measurements")
    parser.add_argument("--scenes", type=int, default=10, help="generated scenes of the demo model's agreement")
    parser.add_argument("--large-frame", type=parse_shape, default=LARGE_FRAME, metavar="HxW")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one round, r18_giam fp32 at 128 only, one scene, a 120x160 large frame")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall time, or the process's CPU time (steadier on a shared machine; with --threads 1)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--large-frame-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    if args.large_frame_probe:
        workload, when, shape = args.large_frame_probe
        print(json.dumps(large_frame_probe(workload, when, parse_shape(shape), clock)))
        return 0
    paths, random = PATHS, ("r50_giam", 640)
    if args.quick:
        paths, random = [("r18_giam", 128, "torch", "fp32")], ("r18_giam", 128)
        args.rounds, args.scenes, args.large_frame = 1, 1, (120, 160)
    agreements = agreement_report(args.scenes, *random)
    with tempfile.TemporaryDirectory() as export_dir:
        speeds = speed(paths, args.rounds, Path(export_dir), clock)
    large = large_frame(args.large_frame, "@".join(str(v) for v in random),
                        ["--clock", args.clock] + (["--threads", str(args.threads)] if args.threads else []))
    print(f"clock: {args.clock}, torch threads: {torch.get_num_threads()}\n")
    print(report(agreements, speeds, large))
    if args.json:
        args.json.write_text(json.dumps({"agreement": agreements, "speed": speeds, "large_frame": large}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
