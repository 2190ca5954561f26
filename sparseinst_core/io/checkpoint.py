"""Reading and writing weights: this project's checkpoints and the official detectron2 releases.

Only tensors are ever read (`torch.load(weights_only=True)` or safetensors): a checkpoint must never run
code. Official names are mapped onto this model's names; any key that is missing, unexpected or of the
wrong shape is reported by name instead of being silently ignored.
"""
from __future__ import annotations

import _compat_pickle
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..model import PRESETS, ModelConfig, SparseInst, build_model, get_preset

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


# What torch.save writes for tensors and plain containers. Once torch.load(weights_only=True) has refused a
# file, a reference to anything else is what it refused: code that unpickling would have imported and run.
_TENSOR_GLOBALS = frozenset({
    "collections.OrderedDict", "torch.Size", "torch.device", "torch.serialization._get_layout",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2", "_codecs.encode",
    "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.bytearray",
})
_DTYPE_NAMES = frozenset(str(value).removeprefix("torch.") for value in vars(torch).values()
                         if isinstance(value, torch.dtype))
_LEGACY_PICKLES = 5   # a pre-zip torch file: magic number, protocol, system info, data, storage keys
_MARK = object()


def _is_tensor_global(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    return name in _TENSOR_GLOBALS or (module == "torch" and (attribute.endswith("Storage")
                                                               or attribute in _DTYPE_NAMES))


def _code_references(path: Path) -> list[str]:
    """Names of the functions and classes, other than tensor rebuilders, that the pickles of a torch file
    refer to, in order of appearance. Opcodes are only parsed (`pickletools`): nothing is imported or run."""
    references = []
    with contextlib.suppress(OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith("data.pkl"):
                        with archive.open(name) as stream:
                            references += _pickle_references(stream, 1)
        else:
            with path.open("rb") as stream:
                references += _pickle_references(stream, _LEGACY_PICKLES)
    return [name for name in dict.fromkeys(references) if not _is_tensor_global(name)]


def _pickle_references(stream, max_pickles: int) -> list[str]:
    """The globals that the first `max_pickles` pickles of `stream` refer to (GLOBAL, INST, STACK_GLOBAL,
    EXT*). The stack is simulated just enough to know the names STACK_GLOBAL takes from it; a pickle that
    does not parse to its STOP (text, raw tensor bytes, damage) contributes nothing."""
    references = []
    for _ in range(max_pickles):
        found, stack, memo, protocol = [], [], {}, 0
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "PROTO":
                    protocol = arg
                elif opcode.name in ("GLOBAL", "INST"):
                    found.append(_python3_name(*arg.split(" ", 1), protocol))
                elif opcode.name == "STACK_GLOBAL":
                    module, name = stack[-2], stack[-1]
                    found.append(_python3_name(module, name, protocol)
                                 if isinstance(module, str) and isinstance(name, str)
                                 else "a global whose name is computed")
                elif opcode.name.startswith("EXT"):
                    found.append(f"copyreg extension {arg}")
                _simulate(opcode, arg, stack, memo)
        except Exception:   # hostile bytes: any failure to parse ends the scan
            break
        references += found
    return references


def _python3_name(module: str, name: str, protocol: int) -> str:
    """module.name as unpickling resolves it: protocols 0-2 use Python 2 names (__builtin__.eval, commands.Popen)."""
    if protocol < 3:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _simulate(opcode, arg, stack: list, memo: dict) -> None:
    """One opcode's effect on the unpickler's stack, keeping strings (module and attribute names) only."""
    if opcode.name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
        return
    if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
        return
    before = opcode.stack_before
    if pickletools.markobject in before:
        mark = max(i for i, value in enumerate(stack) if value is _MARK)
        keep = mark - before.index(pickletools.markobject)
    else:
        keep = len(stack) - len(before)
    if keep < 0:
        raise ValueError("stack underflow")
    del stack[keep:]
    for item in opcode.stack_after:
        if item is pickletools.markobject:
            stack.append(_MARK)
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
        else:
            stack.append(arg if isinstance(arg, str) and opcode.name not in ("GLOBAL", "INST") else None)


def _read_file(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise ValueError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"could not read checkpoint {path}: the file is empty")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix == ".pkl":
        raise ValueError(f"{path}: .pkl files are pickled detectron2/Caffe2 backbone weights and cannot be "
                         "read safely; use the released SparseInst .pth files")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:   # hostile bytes make torch.load raise anything: KeyError, IndexError, ...
        code = _code_references(path)
        if code:
            named = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
            raise ValueError(f"checkpoint {path} contains {'a reference' if len(code) == 1 else 'references'} "
                             f"to {named}: refused, loading cannot run code") from error
        raise ValueError(f"could not read checkpoint {path}: {_why_unreadable(path, error)}") from error


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:   # SafetensorError, OSError, ValueError, ... on a damaged file
        raise ValueError(f"could not read checkpoint {path}: not a readable safetensors file ({error})") from error
    metadata = {}
    for key, text in header.items():
        if key == "format":
            continue
        try:
            metadata[key] = json.loads(text)
        except ValueError:
            raise ValueError(f"checkpoint {path}: metadata {key!r} is not JSON ({text[:40]!r})") from None
    return {"model": tensors, **metadata, "format": header.get("format", FORMAT_TAG)}


def _why_unreadable(path: Path, error: Exception) -> str:
    """The cause of a failed torch.load, in the words a user needs: empty, not a checkpoint, or damaged."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        with contextlib.suppress(zipfile.BadZipFile, OSError):
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return "a zip archive without data.pkl, not a PyTorch checkpoint"
    if not head.startswith((b"PK", b"\x80")):   # torch.save writes a zip, or (legacy) a protocol-2 pickle
        return f"not a PyTorch checkpoint (it begins with {head!r})"
    first_line = str(error).splitlines()[0][:200] if str(error) else ""
    return f"the file is truncated or corrupt ({type(error).__name__}: {first_line})"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state dict in this model's names, metadata) from any supported file.

    Everything is checked before a model sees it: a ValueError names the file and what is wrong (not a
    checkpoint, code in the pickle, entries that are not tensors, NaN/inf weights, metadata of the wrong
    type or from a newer version).
    """
    path = Path(path)
    content = _read_file(path)
    if not isinstance(content, dict):
        raise ValueError(f"checkpoint {path} does not hold a checkpoint dict (found {type(content).__name__})")
    state_dict = content.get("model", content)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"checkpoint {path} has no state dict under 'model'")
    _check_tensors(path, state_dict)
    official = content.get("format") != FORMAT_TAG
    metadata = {k: v for k, v in content.items() if k in METADATA_KEYS and v is not None}
    _check_metadata(path, metadata)
    metadata["layout"] = "official" if official else "sparseinst_core"
    return convert_official_state_dict(state_dict), metadata


def _describe(keys, limit=8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _check_tensors(path: Path, state_dict: dict) -> None:
    """String keys, dense tensors, finite values: a NaN weight makes every prediction empty, silently."""
    not_named = [repr(k) for k in state_dict if not isinstance(k, str)]
    if not_named:
        raise ValueError(f"checkpoint {path}: state dict keys that are not strings: {_describe(not_named)}")
    not_tensors = [f"{k} ({kind})" for k, v in state_dict.items() if (kind := _not_a_plain_tensor(v))]
    if not_tensors:
        raise ValueError(f"checkpoint {path}: entries that are not plain tensors: {_describe(not_tensors)}")
    non_finite = [k for k, v in state_dict.items()
                  if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()]
    if non_finite:
        raise ValueError(f"checkpoint {path} has non-finite weights (NaN or inf) in {_describe(non_finite)}: "
                         "refused, the model would predict nothing")


def _not_a_plain_tensor(value: object) -> str | None:
    """What value is, when it is not a dense CPU tensor of numbers (which is all a weight can be)."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    if value.layout != torch.strided:
        return f"{value.layout} tensor"
    if value.device.type != "cpu":
        return f"tensor on {value.device.type}"
    if value.is_quantized:
        return "quantized tensor"
    return None


METADATA_KEYS = ("preset", "config", "class_names", "iteration", "label_to_category_id")


def _check_metadata(path: Path, metadata: dict) -> None:
    """Types of what this project records next to the weights; a newer version's preset or config is named."""
    preset = metadata.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ValueError(f"checkpoint {path}: preset must be a preset name, got {preset!r:.40}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"checkpoint {path}: preset {preset!r} is not one this version knows "
                         f"({', '.join(PRESETS)}); written by a newer version?")
    if "config" in metadata:
        _model_config(path, metadata["config"])
    names = metadata.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"checkpoint {path}: class_names must be a list of strings, got {names!r:.80}")
    ids = metadata.get("label_to_category_id")
    if ids is not None and not (isinstance(ids, list) and all(_is_int(i) for i in ids)):
        raise ValueError(f"checkpoint {path}: label_to_category_id must be a list of integers, got {ids!r:.80}")
    if "iteration" in metadata and not _is_int(metadata["iteration"]):
        raise ValueError(f"checkpoint {path}: iteration must be an integer, got {metadata['iteration']!r:.40}")


def _model_config(path: str | os.PathLike, config: object) -> ModelConfig:
    """The ModelConfig a checkpoint's recorded `config` (a dict, tuples as lists in JSON) describes.

    Keys this version does not know mean a newer version wrote the file: refused by name rather than
    guessed at. Values must have the type of the field's default (lists of the default's length for tuples).
    """
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint {path}: config must be a dict of model options, got {type(config).__name__}")
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    unknown = [str(k) for k in config if k not in defaults]
    if unknown:
        raise ValueError(f"checkpoint {path}: config keys this version does not know: {_describe(unknown)} "
                         "(written by a newer version?)")
    values, wrong = {}, []
    for name, value in config.items():
        default = defaults[name]
        if isinstance(default, tuple):
            fits = (isinstance(value, (list, tuple)) and len(value) == len(default)
                    and all(_same_kind(v, default[0]) for v in value))
            value = tuple(value) if fits else value
        else:
            fits = _same_kind(value, default)
        if not fits:
            wrong.append(f"{name}={value!r:.40} (expected {type(default).__name__})")
        values[name] = value
    if wrong:
        raise ValueError(f"checkpoint {path}: config values of the wrong type: {', '.join(wrong)}")
    return ModelConfig(**values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _same_kind(value: object, default: object) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, type(default))


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
    # copy_ would turn integers into floats without a word; a float weight stored as int is not a weight.
    mistyped = [f"{k} (checkpoint {state_dict[k].dtype} vs model {target[k].dtype})"
                for k in expected & state_dict.keys()
                if state_dict[k].is_floating_point() != target[k].is_floating_point()
                or state_dict[k].is_complex() != target[k].is_complex()]
    if missing or unexpected or misshaped or mistyped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_describe(unexpected)}")
        if misshaped:
            problems.append(f"mis-shaped keys: {_describe(misshaped)}")
        if mistyped:
            problems.append(f"keys of the wrong dtype: {_describe(mistyped)}")
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
    if preset is not None:
        get_preset(preset)   # the caller's mistake, named as such
    state_dict, metadata = read_checkpoint(path)
    config = metadata.get("config")
    if config is not None and preset in (None, metadata.get("preset")):
        build = functools.partial(SparseInst, _model_config(path, config), preset=metadata.get("preset"))
    else:
        preset = preset or metadata.get("preset")
        if preset is None:
            raise ValueError(f"{path} does not record its preset; pass preset= (e.g. 'r50_giam')")
        class_bias = state_dict.get(CLASS_HEAD_KEYS[1])
        if num_classes is None and class_bias is not None and class_bias.dim() == 1:
            num_classes = class_bias.shape[0]
        build = functools.partial(build_model, preset, num_classes=num_classes)
    try:
        model = build()
    except (ValueError, RuntimeError, TypeError) as error:   # e.g. depth 7 or a negative size in a recorded config
        raise ValueError(f"checkpoint {path}: this version cannot build the model it describes ({error})") from error
    return model, _load_state_dict(model, state_dict, metadata, path, reinit_class_head=False)
