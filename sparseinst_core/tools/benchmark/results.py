"""The benchmark's results as typed records, and their JSON form.

One `VariantResult` per measured path (preset, size, batch, backend, precision); beside them the run's
machine, matrix-multiply peaks, network costs, agreement checks, speed-up ratios, convolution rates and
the Mask R-CNN peer. Every part of the benchmark reads these fields, never string keys; the JSON file is
`dataclasses.asdict` of `BenchmarkResults`, and `BenchmarkResults.from_dict` reads one back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Machine:
    platform: str
    processor: str
    device: str          # "cpu" or the GPU's name
    torch_threads: int
    torch: str           # the PyTorch version


@dataclass
class VariantResult:
    """One path (backend and precision) of one preset at one input size; times in ms, best of the repeats."""
    preset: str
    backend: str
    precision: str
    size: int                    # shorter side the 480x640 camera frame is resized to
    input: list[int]             # (H, W) the network sees: the resized frame padded to a multiple of 32
    device: str
    backbone_ms: float | None    # the stages; None where the backend runs the network as one graph
    encoder_ms: float | None
    decoder_ms: float | None
    network_ms: float
    postprocess_ms: float        # with `instances` instances above the threshold
    instances: int
    end_to_end_ms: float         # `Predictor(image)`: resize, network, post-processing
    fps: float
    postprocess_share: float     # of end_to_end_ms
    gflops: float                # of one forward pass at this input
    achieved_gflops: float       # per second of network time
    fraction_of_peak: float      # of this precision's matrix-multiply peak
    end_to_end_rounds_ms: list[float] = field(default_factory=list)   # one per interleaved round
    providers: list[str] | None = None                                 # ONNX Runtime's execution providers
    batch: int = 1               # images per call


@dataclass
class NetworkCost:
    """Parameters and FLOPs (2 x multiply-accumulates) of one preset at one input size."""
    preset: str
    size: int
    params_m: float
    gflops: float
    conv_gflops: float


@dataclass
class Agreement:
    """A path's outputs against the reference path's, on the same weights and frame."""
    preset: str
    size: int
    backend: str
    precision: str
    versus: str                   # the reference path, e.g. "eager fp32"
    max_relative_error: float     # of the raw network outputs
    mask_iou_mean: float          # final masks, query by query
    mask_iou_min: float
    label_agreement: float        # fraction of queries with the same label
    score_max_abs_diff: float


@dataclass
class SpeedUp:
    """How much faster path `ratio` names is than its baseline (throughput ratios, > 1 is faster)."""
    preset: str
    size: int
    ratio: str
    end_to_end: float             # ratio of the best-of end-to-end times
    network: float
    end_to_end_interleaved: float | None = None            # median of the per-round ratios
    end_to_end_interleaved_range: list[float] | None = None  # [min, max] of the per-round ratios


@dataclass
class ConvEfficiency:
    """The convolutions' rate on an optimised path: conv FLOPs / (network time x their share of it)."""
    preset: str
    size: int
    precision: str
    network_ms: float
    conv_time_share: float
    conv_gflops_per_s: float
    conv_fraction_of_peak: float


@dataclass
class PeerResult:
    """A peer model measured on the same frame and size (torchvision's Mask R-CNN)."""
    model: str
    size: int
    input: list[int]
    end_to_end_ms: float
    fps: float
    instances: int
    gflops: float
    params_m: float


@dataclass
class BenchmarkResults:
    machine: Machine
    matmul_peak_gflops: dict[str, float]         # precision -> GFLOP/s, measured once per run
    rows: list[VariantResult] = field(default_factory=list)
    flops: list[NetworkCost] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)
    maskrcnn: list[PeerResult] = field(default_factory=list)
    conv_efficiency: list[ConvEfficiency] = field(default_factory=list)
    ratios: list[SpeedUp] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkResults:
        """The inverse of `to_dict` (a benchmark.json read back)."""
        return cls(machine=Machine(**data["machine"]), matmul_peak_gflops=data["matmul_peak_gflops"],
                   rows=[VariantResult(**row) for row in data["rows"]],
                   flops=[NetworkCost(**cost) for cost in data["flops"]],
                   agreement=[Agreement(**check) for check in data["agreement"]],
                   maskrcnn=[PeerResult(**peer) for peer in data["maskrcnn"]],
                   conv_efficiency=[ConvEfficiency(**rate) for rate in data["conv_efficiency"]],
                   ratios=[SpeedUp(**ratio) for ratio in data["ratios"]])
