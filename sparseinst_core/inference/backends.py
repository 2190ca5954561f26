"""Inference backends: the same call, (B, 3, H, W) float32 images -> the model's three output tensors.

- `TorchBackend`: the PyTorch model, by default optimised (`optimize_for_inference`), in fp32, bf16 or
  fp16 on the CPU or a CUDA GPU; any input size that is a multiple of 32. On a GPU, CPU batches go
  through pinned memory, and a stream's steady input size runs as a CUDA graph (`cuda_graphs`).
- `OnnxRuntimeBackend`: an exported ONNX file (`sparseinst_core.export`) run by ONNX Runtime with the
  best provider present (TensorRT, then CUDA, then the CPU); the input size is fixed at export time.
- `OpenVinoBackend` (`openvino_backend`): the same ONNX file compiled by OpenVINO for the CPU.
- `ExportOnDemandBackend`: either ONNX engine on a model exported for each input size met, the files
  kept in the export cache (`export_cache`).

`create_backend` picks one by name, and falls back to another when configured to.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..io.onnx_format import OUTPUT_NAMES, read_metadata
from .cpu_chunks import ConcurrentChunks
from .cuda_graphs import CudaGraphRunner
from .defaults import BACKENDS, MAX_CUDA_GRAPHS, MAX_SESSIONS
from .device import HostToDevice, check_precision, precision_context, resolve_device
from .export import cached_export, check_export_input, export_onnx
from .export_cache import ExportCache
from .openvino_backend import OpenVinoBackend, check_openvino_model, check_openvino_settings, import_openvino
from .optimize import optimize_for_inference

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = PROVIDER_PREFERENCE[:2]


class TorchBackend:
    """A SparseInst model in PyTorch; `optimize=True` runs `optimize_for_inference`'s copy of it.

    Takes batches on any device: on a GPU, CPU batches are copied through a pinned buffer without
    blocking (`HostToDevice`). `cuda_graphs=True` replays a captured CUDA graph of the optimised model for
    an input shape met twice among the last 8 calls, at most `max_cuda_graphs` shapes (`CudaGraphRunner`); it applies on
    a GPU with `optimize=True` and is ignored otherwise (the plain model runs under autocast, whose cast
    weights are not meant to live in a graph). `cpu_chunks=True` runs a batch of several images on the CPU
    as concurrent chunks, each on its share of the intra-op threads (`ConcurrentChunks`).
    """

    name = "torch"
    input_size = None  # any (H, W) that is a multiple of 32
    batch_size = None

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = "auto",
                 precision: str = "fp32", optimize: bool = True, cuda_graphs: bool = True,
                 max_cuda_graphs: int = MAX_CUDA_GRAPHS, cpu_chunks: bool = True):
        self.device = resolve_device(device)
        check_precision(self.device, precision)
        self.precision = precision
        self.config = model.config
        if optimize:   # a copy on the device: the caller's model stays where it is (no second copy on a GPU)
            self.model = optimize_for_inference(model.eval(), precision=precision, device=self.device)
            self.autocast = False
        else:  # the plain model, reduced precision through autocast
            self.model = model.to(self.device).eval()
            self.autocast = precision != "fp32"
        self.to_device = HostToDevice(self.device)
        self.graphs = (CudaGraphRunner(self.forward, max_cuda_graphs)
                       if cuda_graphs and optimize and self.device.type == "cuda" else None)
        self.chunks = ConcurrentChunks(self.forward) if cpu_chunks and self.device.type == "cpu" else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network on a float32 batch already on the device (eagerly)."""
        if self.autocast:
            with precision_context(self.device, self.precision):
                outputs = self.model(images)
            return {key: value.float() for key, value in outputs.items()}
        return self.model(images)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.to_device(images)
        if self.graphs is not None:
            return self.graphs(images)
        return self.chunks(images) if self.chunks is not None else self.forward(images)


def import_onnxruntime():
    """onnxruntime, or a RuntimeError that says how to install it.

    ONNX Runtime 1.32 and later collect usage telemetry on Linux by default and keep a session file
    (`.ses`) in the temporary folder; unless the environment says otherwise, it is turned off before the
    first import (ORT_DISABLE_TELEMETRY=1: no uploads, no files), as a robot's software should be.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError as error:
        raise RuntimeError("the onnxruntime backend needs the onnxruntime package: pip install onnxruntime "
                           "(CPU) or onnxruntime-gpu (CUDA and TensorRT)") from error
    return onnxruntime


def select_providers(device: str | torch.device | None, available: list[str]) -> list[str]:
    """ONNX Runtime execution providers for `device`, best first, among `available`.

    'auto': TensorRT, CUDA and the CPU, those present; 'cuda': the GPU providers present, else a
    RuntimeError; 'cpu': the CPU provider only.
    """
    kind = "auto" if device in (None, "auto") else torch.device(device).type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind not in ("auto", "cuda"):
        raise ValueError(f"unsupported device {device!r} for onnxruntime; expected 'cpu', 'cuda' or 'auto'")
    gpu = [p for p in _GPU_PROVIDERS if p in available]
    if kind == "cuda" and not gpu:
        raise RuntimeError(f"device 'cuda' was requested but this onnxruntime has no GPU provider (it has "
                           f"{available}); install onnxruntime-gpu, or use device='auto' to fall back to the CPU")
    return gpu + ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """An exported SparseInst ONNX file run by ONNX Runtime (fp32; fp16 through TensorRT only)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device | None = "auto", precision: str = "fp32",
                 spinning: bool = False):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}; export one with `python -m sparseinst_core.export`")
        metadata = read_metadata(path)
        self.output_names = list(OUTPUT_NAMES)
        self.input_size, self.batch_size = metadata["input_size"], metadata["batch_size"]
        self.config, self.preset = metadata["config"], metadata["preset"]
        self.providers = select_providers(device, ort.get_available_providers())
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision {precision!r} is not available with onnxruntime; use fp32 "
                             "(or fp16 with the TensorRT provider)")
        if precision == "fp16" and self.providers[0] != "TensorrtExecutionProvider":
            raise ValueError("fp16 with onnxruntime needs the TensorRT provider; use fp32 or the torch backend")
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's idle threads spin for a while after each run; the predictor's post-processing runs
        # in torch right after it and would share the cores with them (measured on 2 cores, interleaved:
        # end-to-end 6-10% faster without spinning, for r50_giam and r18_giam at 640).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = [(p, {"trt_fp16_enable": precision == "fp16"}) if p == "TensorrtExecutionProvider" else p
                     for p in self.providers]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.providers = self.session.get_providers()  # what the session really uses
        uses_gpu = any(p in _GPU_PROVIDERS for p in self.providers)
        self.device = torch.device("cuda" if uses_gpu and torch.cuda.is_available() else "cpu")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_export_input(images, self.input_size, self.batch_size)
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outputs = self.session.run(self.output_names, {"images": array})
        return {name: torch.from_numpy(value).to(self.device) for name, value in zip(self.output_names, outputs)}


def create_backend(backend: str = "torch", model: torch.nn.Module | None = None, onnx_path: str | Path | None = None,
                   device: str | torch.device | None = "auto", precision: str = "fp32", optimize: bool = True,
                   input_size: tuple[int, int] | None = None, fallback: str | None = None,
                   cache_dir: str | os.PathLike | None = None, cuda_graphs: bool = True, cpu_chunks: bool = True):
    """Build `backend` ("torch", "onnxruntime" or "openvino"); on a RuntimeError, warn and build `fallback`.

    The ONNX engines run `onnx_path` when that file exists; otherwise `model` is exported there, or, with
    no `onnx_path`, into the export cache (`cache_dir`, default `export_cache.default_cache_dir()`), for
    `input_size`, or, without one, for each input size met (`ExportOnDemandBackend`). `cuda_graphs` and
    `cpu_chunks`: see `TorchBackend`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if fallback is not None and fallback not in BACKENDS:
        raise ValueError(f"unknown fallback backend {fallback!r}; expected one of {BACKENDS} or None")
    try:
        if backend == "torch":
            if model is None:
                raise ValueError("the torch backend needs a model")
            return TorchBackend(model, device=device, precision=precision, optimize=optimize, cuda_graphs=cuda_graphs,
                                cpu_chunks=cpu_chunks)
        open_session = _onnx_engine(backend, model, device, precision)
        if onnx_path is None or not Path(onnx_path).is_file():
            if model is None:
                raise ValueError(f"no ONNX file at {onnx_path} and no model to export")
            cache = ExportCache(cache_dir)
            if input_size is None:
                return ExportOnDemandBackend(model, open_session, backend, cache)
            onnx_path = (cached_export(model, tuple(input_size), cache) if onnx_path is None
                         else export_onnx(model, onnx_path, tuple(input_size)))
        return open_session(onnx_path)
    except RuntimeError as error:
        if fallback is None or fallback == backend:
            raise
        warnings.warn(f"backend {backend!r} is unavailable ({error}); falling back to {fallback!r}", RuntimeWarning,
                      stacklevel=2)
        return create_backend(fallback, model=model, onnx_path=onnx_path, device=device, precision=precision,
                              optimize=optimize, input_size=input_size, fallback=None, cache_dir=cache_dir,
                              cuda_graphs=cuda_graphs, cpu_chunks=cpu_chunks)


def _onnx_engine(backend: str, model, device, precision) -> Callable[[Path], OnnxRuntimeBackend | OpenVinoBackend]:
    """path -> a session of `backend` on that ONNX file; raises now, before any export, what would fail."""
    if backend == "onnxruntime":
        import_onnxruntime()
        return lambda path: OnnxRuntimeBackend(path, device=device, precision=precision)
    core = import_openvino().Core()
    check_openvino_settings(device, precision, core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if model is not None:
        check_openvino_model(vars(model.config))
    return lambda path: OpenVinoBackend(path, device=device, precision=precision)


class ExportOnDemandBackend:
    """An ONNX engine on `model`, exported once for each input size met (a camera stream meets one).

    An ONNX export has a fixed size, and padding an image further than PyTorch would changes the outputs
    (coordinate features and pyramid pooling see the padded map), so each padded size gets its own export:
    the results then equal the torch backend's up to float rounding. The files come from `cache` (exported
    into it on a miss, reused by later runs); at most `max_sessions` sizes keep a live session, the least
    recently used closed first, so a stream whose size keeps changing holds bounded memory.
    `open_session(path)` opens one (`OnnxRuntimeBackend` or `OpenVinoBackend`), named `name`.
    """

    input_size = None  # any multiple of 32, like the torch backend
    batch_size = 1

    def __init__(self, model: torch.nn.Module, open_session: Callable[[Path], OnnxRuntimeBackend | OpenVinoBackend],
                 name: str, cache: ExportCache, max_sessions: int = MAX_SESSIONS):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.model, self.open_session, self.name, self.cache = model.eval(), open_session, name, cache
        self.max_sessions = max_sessions
        self.config = model.config
        self.sessions: OrderedDict[tuple[int, int], OnnxRuntimeBackend | OpenVinoBackend] = OrderedDict()
        first = self._session((64, 64))   # fails now, not at the first frame, when unusable
        self.device, self.precision = first.device, first.precision

    def _session(self, size: tuple[int, int]) -> OnnxRuntimeBackend | OpenVinoBackend:
        if size in self.sessions:
            self.sessions.move_to_end(size)
        else:
            self.sessions[size] = self.open_session(cached_export(self.model, size, self.cache))
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
        return self.sessions[size]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._session(tuple(images.shape[-2:]))(images)
