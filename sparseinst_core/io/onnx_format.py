"""The ONNX files this project exports: their input/output names and the metadata that describes them.

An exported file records the preset, the model config, the fixed input size and the batch size as ONNX
metadata, so it can be run (`Predictor.from_onnx`) without the checkpoint it came from.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..model import SparseInst

INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_scores", "pred_masks")


def write_metadata(path: str | Path, model: SparseInst, image_size: tuple[int, int], batch_size: int | None) -> None:
    """Record `model`'s preset and config, the input size and the batch size (None: dynamic) in the file."""
    import onnx

    proto = onnx.load(str(path))
    metadata = {
        "sparseinst.preset": model.preset or "",
        "sparseinst.config": json.dumps(dataclasses.asdict(model.config)),
        "sparseinst.input_size": json.dumps(list(image_size)),
        "sparseinst.batch_size": json.dumps(batch_size),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict:
    """The metadata `write_metadata` wrote: preset, config (dict), input_size (H, W), batch_size (int or None)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if "sparseinst.config" not in props:
        raise ValueError(f"{path} was not exported by sparseinst_core.export (no sparseinst metadata)")
    return {
        "preset": props["sparseinst.preset"] or None,
        "config": json.loads(props["sparseinst.config"]),
        "input_size": tuple(json.loads(props["sparseinst.input_size"])),
        "batch_size": json.loads(props["sparseinst.batch_size"]),
    }
