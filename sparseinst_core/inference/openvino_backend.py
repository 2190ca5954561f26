"""OpenVINO backend: an exported SparseInst ONNX file compiled by OpenVINO for the CPU, in fp32 or bf16.

The model is read from the same ONNX export ONNX Runtime runs (and the same export-cache file): reading
and compiling it takes about 1 s at 640x864, where converting the PyTorch module with
`openvino.convert_model` took 32 s (r18_giam) to 60 s (r50_giam) here, for the same outputs.

- fp32 is asked for explicitly (`INFERENCE_PRECISION_HINT` f32): on CPUs with AMX, OpenVINO would
  otherwise run in bf16 by default.
- bf16 needs a CPU that OpenVINO runs in bf16 (its `OPTIMIZATION_CAPABILITIES` list BF16: AVX512-BF16 or
  AMX); elsewhere it is refused with the capabilities the CPU has.
- Deformable convolutions (the r50vd_dcn presets) are refused: OpenVINO's ONNX reader has no DeformConv
  ("No conversion rule found for operations: DeformConv-19").
- Compiled with the latency hint: one frame at a time, all cores on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io.onnx_format import INPUT_NAME, OUTPUT_NAMES, read_metadata
from .export import check_export_input

OPENVINO_PRECISIONS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16")}   # ours -> (hint, capability)


def import_openvino():
    """openvino, or a RuntimeError that says how to install it."""
    try:
        import openvino
    except ImportError as error:
        raise RuntimeError("the openvino backend needs the openvino package: pip install openvino") from error
    return openvino


def check_openvino_settings(device: str | torch.device | None, precision: str, capabilities: list[str]) -> str:
    """OpenVINO's inference precision hint for `precision` on this CPU, or a ValueError saying why not.

    `capabilities`: the CPU plugin's OPTIMIZATION_CAPABILITIES (e.g. ["FP32", "INT8", "BF16"]).
    """
    if device not in (None, "auto") and torch.device(device).type != "cpu":
        raise ValueError(f"the openvino backend runs on the CPU, not on {device!r}; use device 'cpu' or 'auto', "
                         "or the torch backend on a GPU")
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not available with openvino; use fp32, or bf16 on a CPU "
                         "with bf16 support")
    hint, capability = OPENVINO_PRECISIONS[precision]
    if capability not in capabilities:
        raise ValueError(f"this CPU does not run OpenVINO in {precision} (its capabilities: "
                         f"{', '.join(capabilities)}; bf16 needs AVX512-BF16 or AMX); use fp32")
    return hint


def check_openvino_model(config: dict) -> None:
    """A RuntimeError for a model OpenVINO cannot read (deformable convolutions)."""
    if any(config.get("deform_stages", ())):
        raise RuntimeError("the openvino backend cannot run deformable convolutions (OpenVINO's ONNX reader has "
                           "no DeformConv); run this model with the torch or onnxruntime backend")


class OpenVinoBackend:
    """An exported SparseInst ONNX file compiled by OpenVINO for the CPU (fp32, or bf16 where supported)."""

    name = "openvino"

    def __init__(self, path: str | Path, device: str | torch.device | None = "auto", precision: str = "fp32"):
        ov = import_openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}; export one with `python -m sparseinst_core.export`")
        metadata = read_metadata(path)
        self.input_size, self.batch_size = metadata["input_size"], metadata["batch_size"]
        self.config, self.preset = metadata["config"], metadata["preset"]
        check_openvino_model(self.config)
        core = ov.Core()
        hint = check_openvino_settings(device, precision, core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision = precision
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]
        self.device = torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        check_export_input(images, self.input_size, self.batch_size)
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        # share_outputs=False: the request's output buffers are reused by the next inference.
        results = self.request.infer({INPUT_NAME: array}, share_inputs=True, share_outputs=False)
        return {name: torch.from_numpy(results[port]) for name, port in zip(OUTPUT_NAMES, self.outputs)}
