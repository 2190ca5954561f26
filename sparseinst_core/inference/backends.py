"""Inference backends: the same call, (B, 3, H, W) float32 images -> the model's three output tensors.

- `TorchBackend`: the PyTorch model, by default optimised (`optimize_for_inference`), in fp32, bf16 or
  fp16 on the CPU or a CUDA GPU; any input size that is a multiple of 32.
- `OnnxRuntimeBackend`: an exported ONNX file (`sparseinst_core.export`) run by ONNX Runtime with the
  best provider present (TensorRT, then CUDA, then the CPU); the input size is fixed at export time.

`create_backend` picks one by name, and falls back to another when configured to.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..io.onnx_format import OUTPUT_NAMES, read_metadata
from .defaults import BACKENDS
from .device import check_precision, precision_context, resolve_device
from .export import export_onnx
from .optimize import optimize_for_inference
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = PROVIDER_PREFERENCE[:2]


class TorchBackend:
    """A SparseInst model in PyTorch; `optimize=True` runs `optimize_for_inference`'s copy of it."""

    name = "torch"
    input_size = None  # any (H, W) that is a multiple of 32
    batch_size = None

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = "auto",
                 precision: str = "fp32", optimize: bool = True):
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

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images.to(self.device, torch.float32)
        if self.autocast:
            with precision_context(self.device, self.precision):
                outputs = self.model(images)
            return {key: value.float() for key, value in outputs.items()}
        return self.model(images)


def import_onnxruntime():
    """onnxruntime, or a RuntimeError that says how to install it."""
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
        if tuple(images.shape[-2:]) != tuple(self.input_size):
            raise ValueError(f"this ONNX model takes {tuple(self.input_size)} inputs (fixed at export), got "
                             f"{tuple(images.shape[-2:])}; pad to that size or export another")
        if self.batch_size is not None and images.shape[0] != self.batch_size:
            raise ValueError(f"this ONNX model takes batches of {self.batch_size}, got {images.shape[0]}")
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outputs = self.session.run(self.output_names, {"images": array})
        return {name: torch.from_numpy(value).to(self.device) for name, value in zip(self.output_names, outputs)}


def create_backend(backend: str = "torch", model: torch.nn.Module | None = None, onnx_path: str | Path | None = None,
                   device: str | torch.device | None = "auto", precision: str = "fp32", optimize: bool = True,
                   input_size: tuple[int, int] | None = None, fallback: str | None = None):
    """Build `backend` ("torch" or "onnxruntime"); on a RuntimeError, warn and build `fallback` instead.

    onnxruntime runs `onnx_path` when that file exists; otherwise `model` is exported there (or to a
    temporary file) for `input_size`, or, without one, for each input size met (`ExportOnDemandBackend`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if fallback is not None and fallback not in BACKENDS:
        raise ValueError(f"unknown fallback backend {fallback!r}; expected one of {BACKENDS} or None")
    try:
        if backend == "torch":
            if model is None:
                raise ValueError("the torch backend needs a model")
            return TorchBackend(model, device=device, precision=precision, optimize=optimize)
        import_onnxruntime()
        if onnx_path is None or not Path(onnx_path).is_file():
            if model is None:
                raise ValueError(f"no ONNX file at {onnx_path} and no model to export")
            if input_size is None:
                return ExportOnDemandBackend(model, device=device, precision=precision)
            onnx_path = _export_for_session(model, onnx_path, input_size)
        return OnnxRuntimeBackend(onnx_path, device=device, precision=precision)
    except RuntimeError as error:
        if fallback is None or fallback == backend:
            raise
        warnings.warn(f"backend {backend!r} is unavailable ({error}); falling back to {fallback!r}", RuntimeWarning,
                      stacklevel=2)
        return create_backend(fallback, model=model, onnx_path=onnx_path, device=device, precision=precision,
                              optimize=optimize, input_size=input_size, fallback=None)


class ExportOnDemandBackend:
    """ONNX Runtime on `model`, exported once for each input size met (a camera stream meets one).

    An ONNX export has a fixed size, and padding an image further than PyTorch would changes the outputs
    (coordinate features and pyramid pooling see the padded map), so each padded size gets its own export:
    the results then equal the torch backend's up to float rounding.
    """

    name = "onnxruntime"
    input_size = None  # any multiple of 32, like the torch backend
    batch_size = 1

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = "auto", precision: str = "fp32"):
        import tempfile

        import_onnxruntime()
        self.model, self.device_request, self.precision = model.eval(), device, precision
        self.config = model.config
        self.directory = Path(tempfile.mkdtemp(prefix="sparseinst_onnx_"))
        self.sessions: dict[tuple[int, int], OnnxRuntimeBackend] = {}
        self.device = self._session((64, 64)).device   # fails now, not at the first frame, when unusable

    def _session(self, size: tuple[int, int]) -> OnnxRuntimeBackend:
        if size not in self.sessions:
            path = _export_for_session(self.model, self.directory / f"model_{size[0]}x{size[1]}.onnx", size)
            self.sessions[size] = OnnxRuntimeBackend(path, device=self.device_request, precision=self.precision)
        return self.sessions[size]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._session(tuple(images.shape[-2:]))(images)


def _export_for_session(model, onnx_path, input_size) -> Path:
    import tempfile

    if onnx_path is None:
        onnx_path = Path(tempfile.mkdtemp(prefix="sparseinst_onnx_")) / f"model_{input_size[0]}x{input_size[1]}.onnx"
    return export_onnx(model, onnx_path, tuple(input_size))
