"""Reading and writing weights: this project's checkpoints and the official detectron2 releases.

Only tensors are ever read (`torch.load(weights_only=True)` or safetensors): a checkpoint must never run
code. Official names are mapped onto this model's names; any key that is missing, unexpected or of the
wrong shape is reported by name instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..model import ModelConfig, SparseInst, build_model

FORMAT_TAG = "sparseinst_core/1"
logger = logging.getLogger(__name__)
CLASS_HEAD_KEYS = ("decoder.inst_branch.cls_score.weight", "decoder.inst_branch.cls_score.bias")


def _rename_detectron2(key: str) -> str:
    """detectron2 ResNet names -> the torchvision-style names of `backbone.ResNet`.

    The official ResNet-vd checkpoints already use timm's names, which are this model's names.
    """
    if key.startswith("backbone.stem."):
        key = re.sub(r"^backbone\.stem\.conv1\.norm\.", "backbone.bn1.", key)
        return re.sub(r"^backbone\.stem\.conv1\.", "backbone.conv1.", key)
    match = re.match(r"^backbone\.res(\d)\.(\d+)\.(.*)$", key)
    if not match:
        return key
    stage, block, rest = int(match.group(1)), match.group(2), match.group(3)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
    return f"backbone.layer{stage - 1}.{block}.{rest}"


def convert_official_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    """Map an official SparseInst state dict (detectron2 or timm-vd backbone names) to this model's names."""
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("module."):  # saved from DistributedDataParallel
            key = key[len("module."):]
        if key in ("pixel_mean", "pixel_std"):
            continue
        converted[_rename_detectron2(key)] = value
    return converted


@dataclass
class LoadReport:
    """What `load_checkpoint` did: the source layout and anything it skipped on request."""

    path: str
    layout: str                                   # "sparseinst_core" or "official"
    reinitialised: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # preset, config, class_names, ... when recorded


def _read_file(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint path is not a file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"could not read safetensors checkpoint {path}: {error}") from error
        metadata = {k: json.loads(v) for k, v in meta.items() if k != "format"}
        return {"model": tensors, **metadata, "format": meta.get("format", FORMAT_TAG)}
    if path.suffix == ".pkl":
        raise ValueError(f"{path}: .pkl files are pickled detectron2/Caffe2 backbone weights and cannot be "
                         "read safely; use the released SparseInst .pth files")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):  # the weights-only unpickler met a class or function
            raise ValueError(f"{path} holds more than tensors and plain containers, and is refused so that "
                             "loading cannot run code") from error
        raise ValueError(f"could not read checkpoint {path}: the file is truncated or corrupt "
                         f"(UnpicklingError)") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"could not read checkpoint {path}: the file is truncated or corrupt "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state dict in this model's names, metadata) from any supported file."""
    path = Path(path)
    content = _read_file(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (found {type(content).__name__})")
    state_dict = content.get("model", content)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"{path} has no state dict under 'model'")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {bad[:5]}")
    official = content.get("format") != FORMAT_TAG
    metadata = {k: v for k, v in content.items()
                if k in ("preset", "config", "class_names", "iteration", "label_to_category_id")}
    metadata["layout"] = "official" if official else "sparseinst_core"
    return convert_official_state_dict(state_dict), metadata


def _describe(keys, limit=8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, reinit_class_head: bool = False) -> LoadReport:
    """Load weights into `model` from an official detectron2 `.pth` or this project's `.pth`/`.safetensors`.

    Strict: raises ValueError naming missing, unexpected and mis-shaped keys. With
    `reinit_class_head=True` a checkpoint trained for another number of classes can be fine-tuned: the
    class head is re-initialised (as in a new model), listed in `LoadReport.reinitialised` and logged.
    """
    state_dict, metadata = read_checkpoint(path)
    return _load_state_dict(model, state_dict, metadata, path, reinit_class_head)


def _load_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], metadata: dict, path,
                     reinit_class_head: bool) -> LoadReport:
    """`load_checkpoint` on a state dict already read from `path`."""
    target = model.state_dict()
    # Batch-norm step counters carry no weights; frozen and trainable BN checkpoints are interchangeable.
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    expected = {k for k in target if not k.endswith("num_batches_tracked")}
    reinitialised = []
    if reinit_class_head:
        for key in CLASS_HEAD_KEYS:
            if key in state_dict and state_dict[key].shape != target[key].shape:
                skipped_classes = state_dict.pop(key).shape[0]
                reinitialised.append(key)
        expected -= set(reinitialised)
    missing = expected - state_dict.keys()
    unexpected = state_dict.keys() - expected
    misshaped = [f"{k} (checkpoint {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)})"
                 for k in expected & state_dict.keys() if state_dict[k].shape != target[k].shape]
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_describe(unexpected)}")
        if misshaped:
            problems.append(f"mis-shaped keys: {_describe(misshaped)}")
        hint = ""
        if any(k in CLASS_HEAD_KEYS for k in (m.split(" ")[0] for m in misshaped)):
            hint = ("; the class count differs: pass num_classes to build_model, or "
                    "reinit_class_head=True to fine-tune on new classes")
        raise ValueError(f"checkpoint {path} does not fit the model: " + "; ".join(problems) + hint)
    with torch.no_grad():
        for key, value in state_dict.items():
            target[key].copy_(value)
    if reinitialised:
        model.decoder.inst_branch.reset_class_head()
        logger.warning(f"{path}: the class head was re-initialised for fine-tuning (the checkpoint has "
                       f"{skipped_classes} classes, the model {target[CLASS_HEAD_KEYS[1]].shape[0]}); not loaded: "
                       f"{', '.join(reinitialised)}")
    metadata = dict(metadata)
    return LoadReport(str(path), metadata.pop("layout"), reinitialised, metadata)


def checkpoint_metadata(model: nn.Module, class_names=None) -> dict:
    meta = {"format": FORMAT_TAG}
    preset = getattr(model, "preset", None)
    config = getattr(model, "config", None)
    if preset:
        meta["preset"] = preset
    if isinstance(config, ModelConfig):
        meta["config"] = dataclasses.asdict(config)
    if class_names is not None:
        meta["class_names"] = list(class_names)
    return meta


def save_checkpoint(model: nn.Module, path: str | os.PathLike, class_names=None, **extra) -> Path:
    """Write model weights (+ preset, config and class names) atomically: temp file, then rename.

    `.safetensors` writes tensors only (metadata as JSON strings); anything else is a torch `.pth` dict,
    which may also carry `extra` training state (optimizer, scheduler, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = checkpoint_metadata(model, class_names)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        if extra:
            raise ValueError(".safetensors checkpoints hold weights only; use .pth for training state")
        save_file(state_dict, str(tmp), metadata={k: v if k == "format" else json.dumps(v) for k, v in meta.items()})
    else:
        torch.save({"model": state_dict, **meta, **extra}, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files; weights are shareable data
    os.replace(tmp, path)
    return path


def load_model(path: str | os.PathLike, preset: str | None = None, num_classes: int | None = None):
    """Build the network a checkpoint was trained as, and load it: returns (model, LoadReport).

    This project's checkpoints record their preset and config. Official ones do not: pass `preset`
    (e.g. "r50_giam"); the class count is read from the class head when not given.
    """
    state_dict, metadata = read_checkpoint(path)
    config = metadata.get("config")
    if config is not None and preset in (None, metadata.get("preset")):
        config = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        model = SparseInst(config, preset=metadata.get("preset"))
    else:
        preset = preset or metadata.get("preset")
        if preset is None:
            raise ValueError(f"{path} does not record its preset; pass preset= (e.g. 'r50_giam')")
        if num_classes is None and CLASS_HEAD_KEYS[1] in state_dict:
            num_classes = state_dict[CLASS_HEAD_KEYS[1]].shape[0]
        model = build_model(preset, num_classes=num_classes)
    return model, _load_state_dict(model, state_dict, metadata, path, reinit_class_head=False)
