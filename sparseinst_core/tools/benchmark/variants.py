"""The paths the benchmark compares, and how each is measured.

A variant is one entry of `VARIANTS`: a backend and a precision, the function that builds its
`Predictor`, whether its network can be timed stage by stage, and where it can run. The first entry,
the plain eager model with the official post-processing, is the reference every other path's outputs
are checked against, and the baseline of the speed-ups in `SPEED_UPS`. For one preset and size, each
variant gets one `VariantResult` (stage latencies, post-processing, end to end); afterwards all of them
run in interleaved end-to-end rounds, from which the speed-up ratios are taken. The Mask R-CNN peer is
measured on the same frame.

Only PyTorch, torchvision and NumPy are imported at module level (ONNX Runtime and OpenVINO where their
variants run).
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...inference.defaults import MASK_THRESHOLD
from ...inference.optimize import optimize_for_inference
from ...inference.postprocess import postprocess
from ...inference.predictor import Predictor
from ...model import padded_shape, resized_shape
from .measure import FlopCount, conv_time_share, count_flops, count_parameters, time_call
from .results import Agreement, ConvEfficiency, PeerResult, SpeedUp, VariantResult

CAMERA_SHAPE = (480, 640)          # the frame every size is computed from (VGA, 4:3)
STAGES = ("backbone", "encoder", "decoder")
SCORE_THRESHOLD = 0.0              # every query is post-processed: 100 instances, whatever the weights


@dataclass(frozen=True)
class InputGeometry:
    """A CAMERA_SHAPE frame at shorter side `size` (longer side at most 4/3 of it): resized and padded (H, W)."""
    size: int
    max_size: int
    resized: tuple[int, int]
    padded: tuple[int, int]


def input_geometry(size: int) -> InputGeometry:
    max_size = int(size * 4 / 3 + 0.5)
    resized = resized_shape(*CAMERA_SHAPE, size, max_size)
    return InputGeometry(size, max_size, resized, padded_shape(*resized))


def camera_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*CAMERA_SHAPE, 3), dtype=np.uint8)


@dataclass
class Workload:
    """One preset at one input size: what every variant of it is measured on."""
    preset: str
    model: torch.nn.Module       # calibrated random weights (`measure.calibrate_batch_norm`), on the device
    geometry: InputGeometry
    flops: FlopCount


# ------------------------------------------------------------------------------ building each variant
def _predictor_options(workload: Workload, device: torch.device, precision: str) -> dict:
    geometry = workload.geometry
    return dict(min_size=geometry.size, max_size=geometry.max_size, score_threshold=SCORE_THRESHOLD,
                mask_threshold=MASK_THRESHOLD, device=device, precision=precision)


def build_eager(workload: Workload, device: torch.device, precision: str, export_dir: Path) -> Predictor:
    """The plain model with the official two-step post-processing: the baseline."""
    return Predictor(workload.model, optimize=False, postprocess="reference",
                     **_predictor_options(workload, device, precision))


def build_optimized(workload: Workload, device: torch.device, precision: str, export_dir: Path) -> Predictor:
    """`optimize_for_inference` and the fast post-processing: what the node runs by default."""
    return Predictor(workload.model, **_predictor_options(workload, device, precision))


def build_exported(workload: Workload, device: torch.device, precision: str, export_dir: Path,
                   backend: str = "onnxruntime") -> Predictor:
    """Exported for this input size into `export_dir` (one file for both engines), run by `backend`
    (ONNX Runtime or OpenVINO), fast post-processing."""
    height, width = workload.geometry.padded
    onnx_path = export_dir / f"{workload.preset}_{height}x{width}.onnx"
    return Predictor(workload.model, backend=backend, onnx_path=onnx_path, input_size=(height, width),
                     **_predictor_options(workload, device, precision))


# ------------------------------------------------------------------------------- where each can run
def anywhere(device: torch.device) -> str | None:
    return None


def cuda_only(device: torch.device) -> str | None:
    return None if device.type == "cuda" else "needs a CUDA GPU"


def openvino_on_cpu(device: torch.device, precision: str = "fp32") -> str | None:
    """OpenVINO runs on the CPU, in bf16 only where the CPU does (its OPTIMIZATION_CAPABILITIES)."""
    if device.type != "cpu":
        return "runs on the CPU only"
    try:
        import openvino
    except ImportError as error:
        return str(error)
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    wanted = {"fp32": "FP32", "bf16": "BF16"}[precision]
    if wanted not in capabilities:
        return f"this CPU does not run OpenVINO in {precision} ({', '.join(capabilities)})"
    return None


def native_bf16(device: torch.device) -> str | None:
    """bf16 only where the hardware computes in it: elsewhere it is emulated, far slower than fp32 (on an
    AVX2-only CPU, 0.2 GFLOP/s for a bf16 matrix product against 20 in fp32), which measures nothing useful."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    return None if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "this CPU has no native bf16 (AVX512-BF16/AMX)"


@dataclass(frozen=True)
class Variant:
    """One path the benchmark compares; adding a backend or precision is one more entry in `VARIANTS`."""
    backend: str                 # the name in the results
    precision: str
    build: Callable[[Workload, torch.device, str, Path], Predictor]
    staged: bool = True          # backbone, encoder and decoder timed apart (a torch module), else one graph
    why_unsupported: Callable[[torch.device], str | None] = anywhere   # why it cannot run on a device, or None
    requires: tuple[str, ...] = ()                                     # modules it imports

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"

    def unavailable(self, device: torch.device) -> str | None:
        """Why this variant cannot run on `device` here, or None."""
        reason = self.why_unsupported(device)
        if reason is not None:
            return reason
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as error:
                return str(error)
        return None


VARIANTS = (
    Variant("eager", "fp32", build_eager),
    Variant("optimized", "fp32", build_optimized),
    Variant("optimized", "fp16", build_optimized, why_unsupported=cuda_only),
    Variant("optimized", "bf16", build_optimized, why_unsupported=native_bf16),
    Variant("onnxruntime", "fp32", build_exported, staged=False, requires=("onnx", "onnxruntime")),
    Variant("openvino", "fp32", partial(build_exported, backend="openvino"), staged=False,
            why_unsupported=openvino_on_cpu, requires=("onnx", "openvino")),
    Variant("openvino", "bf16", partial(build_exported, backend="openvino"), staged=False,
            why_unsupported=partial(openvino_on_cpu, precision="bf16"), requires=("onnx", "openvino")),
)
REFERENCE = VARIANTS[0]

# The speed-ups the project targets: (name, faster path, baseline), each path as (backend, precision).
SPEED_UPS = (
    ("optimized fp32 vs eager fp32 + reference post-processing", ("optimized", "fp32"), ("eager", "fp32")),
    ("bf16 vs fp32 (optimized)", ("optimized", "bf16"), ("optimized", "fp32")),
    ("fp16 vs fp32 (optimized)", ("optimized", "fp16"), ("optimized", "fp32")),
    ("onnxruntime vs optimized torch (fp32)", ("onnxruntime", "fp32"), ("optimized", "fp32")),
    ("openvino vs optimized torch (fp32)", ("openvino", "fp32"), ("optimized", "fp32")),
    ("openvino bf16 vs openvino fp32", ("openvino", "bf16"), ("openvino", "fp32")),
)


def available_variants(device: torch.device, skip_backends=()) -> list[Variant]:
    """The variants that run on `device` here, in table order; the others are named on stderr."""
    variants = []
    for variant in VARIANTS:
        reason = "skipped on request" if variant.backend in skip_backends else variant.unavailable(device)
        if reason is None:
            variants.append(variant)
        else:
            print(f"skipping {variant.name}: {reason}", file=sys.stderr)
    return variants


# ------------------------------------------------------------------------------------------ measuring
def network_stages(module):
    """[(stage name, function)] chaining to the network's outputs, for the torch backends' models."""
    normalize = getattr(module, "normalize", None) or (lambda x: (x - module.pixel_mean) / module.pixel_std)
    return [("backbone", lambda images: module.backbone(normalize(images))),
            ("encoder", module.encoder),
            ("decoder", module.decoder)]


@dataclass
class Measured:
    """A variant's result, its raw network outputs (for the agreement checks) and its predictor (for the rounds)."""
    result: VariantResult
    outputs: dict[str, torch.Tensor]
    predictor: Callable


def measure_variant(variant: Variant, workload: Workload, device: torch.device, repeats: int,
                    peaks: dict[str, float], export_dir: Path) -> Measured:
    """Stage, post-processing and end-to-end latencies of `variant` on `workload` (best of `repeats`)."""
    geometry = workload.geometry
    predictor = variant.build(workload, device, variant.precision, export_dir)
    device = predictor.device
    image = camera_image()
    batch = predictor.batch([predictor.preprocess(image)]).to(device)      # (1, 3, H, W) padded
    stage_ms = dict.fromkeys(STAGES)
    with torch.inference_mode():
        if variant.staged:
            value = batch
            for stage, function in network_stages(predictor.backend.model):
                stage_ms[stage] = 1e3 * time_call(lambda: function(value), device, repeats)
                value = function(value)
            outputs = {key: tensor.float() for key, tensor in value.items()}
            network_ms = sum(stage_ms.values())
        else:
            network_ms = 1e3 * time_call(lambda: predictor.backend(batch), device, repeats)
            outputs = predictor.backend(batch)
        post_args = (outputs["pred_logits"][0], outputs["pred_scores"][0], outputs["pred_masks"][0],
                     batch.shape[-2:], geometry.resized, CAMERA_SHAPE, SCORE_THRESHOLD, MASK_THRESHOLD)
        postprocess_ms = 1e3 * time_call(lambda: predictor.postprocess(*post_args), device, repeats)
        instances = len(predictor.postprocess(*post_args)[0])
        end_to_end_ms = 1e3 * time_call(lambda: predictor(image), device, repeats)
    achieved_gflops = workload.flops.total / 1e9 / (network_ms / 1e3)
    result = VariantResult(
        preset=workload.preset, backend=variant.backend, precision=variant.precision, size=geometry.size,
        input=list(geometry.padded), device=str(device), backbone_ms=stage_ms["backbone"],
        encoder_ms=stage_ms["encoder"], decoder_ms=stage_ms["decoder"], network_ms=network_ms,
        postprocess_ms=postprocess_ms, instances=instances, end_to_end_ms=end_to_end_ms, fps=1e3 / end_to_end_ms,
        postprocess_share=postprocess_ms / end_to_end_ms, gflops=workload.flops.total / 1e9,
        achieved_gflops=achieved_gflops, fraction_of_peak=achieved_gflops / peaks[variant.precision],
        providers=getattr(predictor.backend, "providers", None), batch=batch.shape[0])
    return Measured(result, outputs, predictor)


def agreement(measured: Measured, reference: Measured, geometry: InputGeometry) -> Agreement:
    """Raw-output relative error, and final-mask agreement query by query (threshold 0, unsorted)."""
    outputs, expected = measured.outputs, reference.outputs
    relative = max(((outputs[k] - expected[k]).abs().max() / expected[k].abs().max().clamp(min=1e-12)).item()
                   for k in expected)
    args = (geometry.padded, geometry.resized, CAMERA_SHAPE, SCORE_THRESHOLD, MASK_THRESHOLD)
    a = postprocess(outputs["pred_logits"][0], outputs["pred_scores"][0], outputs["pred_masks"][0].float(), *args)
    b = postprocess(expected["pred_logits"][0], expected["pred_scores"][0], expected["pred_masks"][0], *args)
    intersection = (a[2] & b[2]).flatten(1).sum(1).float()                 # (N,)
    union = (a[2] | b[2]).flatten(1).sum(1).float()
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    row, versus = measured.result, reference.result
    return Agreement(preset=row.preset, size=row.size, backend=row.backend, precision=row.precision,
                     versus=f"{versus.backend} {versus.precision}", max_relative_error=relative,
                     mask_iou_mean=iou.mean().item(), mask_iou_min=iou.min().item(),
                     label_agreement=(a[1] == b[1]).float().mean().item(),
                     score_max_abs_diff=(a[0] - b[0]).abs().max().item())


def interleaved_end_to_end(measured: list[Measured], device: torch.device, rounds: int) -> None:
    """Times every predictor of one preset and size in turn, `rounds` times, into `end_to_end_rounds_ms`.

    On a shared machine the load drifts over the minutes that separate one variant's measurement from
    another's; in round-robin order every variant sees the same drift, so per-round ratios between two
    variants (`speed_ups`) are far steadier than ratios of separately measured times.
    """
    image = camera_image()
    for entry in measured:
        entry.result.end_to_end_rounds_ms = []
    with torch.inference_mode():
        for _ in range(rounds):
            for entry in measured:
                seconds = time_call(lambda: entry.predictor(image), device, 1, warmup=0)
                entry.result.end_to_end_rounds_ms.append(1e3 * seconds)


def speed_ups(rows: list[VariantResult]) -> list[SpeedUp]:
    """The `SPEED_UPS` present in `rows`, per preset, size and batch (end-to-end throughput ratios)."""
    index = {(r.preset, r.size, r.batch, r.backend, r.precision): r for r in rows}
    out = []
    for preset, size, batch in sorted({(r.preset, r.size, r.batch) for r in rows}):
        for name, faster, baseline in SPEED_UPS:
            a, b = index.get((preset, size, batch, *faster)), index.get((preset, size, batch, *baseline))
            if a is None or b is None:
                continue
            ratio = SpeedUp(preset=preset, size=size, ratio=name, end_to_end=b.end_to_end_ms / a.end_to_end_ms,
                            network=b.network_ms / a.network_ms)
            if a.end_to_end_rounds_ms and b.end_to_end_rounds_ms:
                per_round = np.array(b.end_to_end_rounds_ms) / np.array(a.end_to_end_rounds_ms)
                ratio.end_to_end_interleaved = float(np.median(per_round))
                ratio.end_to_end_interleaved_range = [float(per_round.min()), float(per_round.max())]
            out.append(ratio)
    return out


def convolution_efficiency(workload: Workload, device: torch.device, precisions,
                           peaks: dict[str, float]) -> list[ConvEfficiency]:
    """Achieved conv rate = conv FLOPs / (network time x conv time share), optimised torch, per precision."""
    rows = []
    example = torch.rand(1, 3, *workload.geometry.padded, device=device) * 255
    for precision in precisions:
        optimized = optimize_for_inference(workload.model, precision=precision, device=device)
        with torch.inference_mode():
            seconds = time_call(lambda: optimized(example), device, repeats=3)
            share = conv_time_share(lambda: optimized(example), device)
        conv_gflops_per_s = workload.flops.conv / 1e9 / (seconds * share)
        rows.append(ConvEfficiency(preset=workload.preset, size=workload.geometry.size, precision=precision,
                                   network_ms=1e3 * seconds, conv_time_share=share,
                                   conv_gflops_per_s=conv_gflops_per_s,
                                   conv_fraction_of_peak=conv_gflops_per_s / peaks[precision]))
    return rows


def measure_maskrcnn(geometry: InputGeometry, device: torch.device, repeats: int) -> PeerResult:
    """torchvision Mask R-CNN R50-FPN (random weights, no downloads), 100 detections, same frame and size."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=geometry.size,
                                  max_size=geometry.max_size, box_score_thresh=SCORE_THRESHOLD,
                                  box_detections_per_img=100).eval().to(device)
    image = torch.from_numpy(camera_image()).permute(2, 0, 1).float().div(255).to(device)   # (3, H, W)
    with torch.inference_mode():
        seconds = time_call(lambda: model([image]), device, repeats)
        flops = count_flops(lambda x: model([x]), image)
        detections = len(model([image])[0]["scores"])
    return PeerResult(model="maskrcnn_resnet50_fpn", size=geometry.size, input=list(geometry.padded),
                      end_to_end_ms=1e3 * seconds, fps=1 / seconds, instances=detections,
                      gflops=flops.total / 1e9, params_m=count_parameters(model) / 1e6)
