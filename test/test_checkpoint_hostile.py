"""Checkpoints written by a careless user or an attacker: every one is refused with one line naming the file
and the cause, and none runs code."""
import builtins
import json
import os
import pickle
import subprocess
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from sparseinst_core import build_model, load_checkpoint, load_model, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")   # torch on a sparse entry


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A good r18_giam checkpoint of this project, as the dict torch.save wrote."""
    torch.manual_seed(0)
    path = save_checkpoint(build_model("r18_giam", num_classes=2), tmp_path_factory.mktemp("good") / "good.pth",
                           class_names=["cup", "fork"])
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------------------------ code
class CallsOnLoad:
    """Pickles as a call of `function(*args)`: what unpickling with weights_only=False would run."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker):
    """Each one creates `marker` when run, so a test can tell that nothing ran."""
    return {
        "os.system": CallsOnLoad(os.system, f"touch {marker}"),
        "builtins.eval": CallsOnLoad(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": CallsOnLoad(subprocess.Popen, ["touch", str(marker)]),
    }


def python_name(function) -> str:
    return f"{function.__module__}.{function.__name__}"   # os.system is posix.system on Linux


def write_zip(path, payload):
    torch.save({"model": {"w": torch.zeros(2)}, "extra": payload}, path)


def write_legacy(path, payload):
    torch.save({"model": {"w": torch.zeros(2)}, "extra": payload}, path, _use_new_zipfile_serialization=False)


def raw_pickle(protocol):
    def write(path, payload):
        path.write_bytes(pickle.dumps({"model": payload}, protocol=protocol))
    return write


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("writer", [write_zip, write_legacy, raw_pickle(0), raw_pickle(2), raw_pickle(5)],
                         ids=["torch-zip", "torch-legacy", "pickle-0", "pickle-2", "pickle-5"])
def test_code_in_a_checkpoint_is_refused_by_name_and_never_runs(tmp_path, payload, writer):
    marker = tmp_path / "code_ran"
    function = payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    writer(path, function)
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(error.value) == (f"checkpoint {path} contains a reference to {python_name(function.function)}: "
                                "refused, loading cannot run code")
    assert not marker.exists()


@pytest.mark.parametrize("wording", [
    "Weights only load failed. Unsupported global: GLOBAL posix.system was not an allowed global by default.",
    "Weights only load failed.\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.",
    "something a future torch says",
])
def test_refusal_is_named_whatever_torch_says(tmp_path, monkeypatch, wording):
    """The name comes from the file's own opcodes, not from the wording of the torch version in use."""
    path = tmp_path / "evil.pth"
    write_zip(path, payloads(tmp_path / "code_ran")["os.system"])

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(wording)
    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ValueError, match=f"reference to {python_name(os.system)}: refused, loading cannot run code"):
        load_model(path)


def test_a_class_that_is_not_a_tensor_is_refused_by_name(tmp_path):
    import argparse
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "args.pth")
    with pytest.raises(ValueError, match="reference to argparse.Namespace: refused"):
        load_model(tmp_path / "args.pth")


# ---------------------------------------------------------------------------------- NaN weights
def test_non_finite_weights_are_refused_with_their_names(saved, tmp_path):
    state = {k: v.clone() for k, v in saved["model"].items()}
    state["encoder.fusion.weight"][0, 0] = float("nan")
    state["decoder.inst_branch.cls_score.bias"][1] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save({**saved, "model": state}, path)
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(error.value) == (f"checkpoint {path} has non-finite weights (NaN or inf) in "
                                "decoder.inst_branch.cls_score.bias, encoder.fusion.weight: refused, "
                                "the model would predict nothing")


def test_a_checkpoint_full_of_nan_is_refused_with_a_count(saved, tmp_path):
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in saved["model"].items()}
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path), metadata={"format": saved["format"]})
    floating = sum(v.is_floating_point() for v in state.values())
    with pytest.raises(ValueError, match=rf"non-finite weights .* \.\.\. \({floating} in all\): refused"):
        load_checkpoint(build_model("r18_giam", num_classes=2), path)


# ------------------------------------------------------------------------------- malformed files
def with_entries(**changes):
    """A writer of the good checkpoint with some top-level entries changed."""
    return lambda saved, path: torch.save({**saved, **changes}, path)


def with_weights(convert):
    return lambda saved, path: torch.save({**saved, "model": {k: convert(v) for k, v in saved["model"].items()}}, path)


def with_config(**changes):
    return lambda saved, path: torch.save({**saved, "config": {**saved["config"], **changes}}, path)


def zip_without_torch(saved, path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "not weights")


def safetensors_with(**metadata):
    def write(saved, path):
        tensors = {k: v.contiguous() for k, v in saved["model"].items()}
        save_file(tensors, str(path), metadata={"format": saved["format"], **metadata})
    return write


HOSTILE = {
    "text named .pth": ("m.pth", lambda saved, path: path.write_text("hello, these are not weights\n"),
                        "could not read checkpoint {path}: not a PyTorch checkpoint (it begins with b'hello, these"),
    "binary junk": ("m.pth", lambda saved, path: path.write_bytes(b"binary junk\n" * 10),
                    "could not read checkpoint {path}: not a PyTorch checkpoint"),
    "empty .pth": ("m.pth", lambda saved, path: path.write_bytes(b""), "could not read checkpoint {path}: the file is empty"),
    "empty .safetensors": ("m.safetensors", lambda saved, path: path.write_bytes(b""),
                           "could not read checkpoint {path}: the file is empty"),
    "directory": ("m.pth", lambda saved, path: path.mkdir(), "checkpoint path is not a file: {path}"),
    "zip that is not torch": ("m.pth", zip_without_torch,
                              "could not read checkpoint {path}: a zip archive without data.pkl, not a PyTorch checkpoint"),
    "text named .safetensors": ("m.safetensors", lambda saved, path: path.write_text("hello"),
                                "could not read checkpoint {path}: not a readable safetensors file"),
    "dict without tensors": ("m.pth", lambda saved, path: torch.save({"model": {"a": 1, "b": "x"}}, path),
                             "checkpoint {path}: entries that are not plain tensors: a (int), b (str)"),
    "nested dicts": ("m.pth", lambda saved, path: torch.save({"model": {"backbone": saved["model"]}}, path),
                     "checkpoint {path}: entries that are not plain tensors: backbone (dict)"),
    "sparse and meta tensors": ("m.pth", lambda saved, path: torch.save(
        {"model": {"s": torch.eye(2).to_sparse(), "m": torch.zeros(2, device="meta")}}, path),
        "checkpoint {path}: entries that are not plain tensors: m (tensor on meta), s (torch.sparse_coo tensor)"),
    "integer keys": ("m.pth", lambda saved, path: torch.save({"model": {0: torch.zeros(1)}}, path),
                     "checkpoint {path}: state dict keys that are not strings: 0"),
    "list instead of a dict": ("m.pth", lambda saved, path: torch.save([torch.zeros(1)], path),
                               "checkpoint {path} does not hold a checkpoint dict (found list)"),
    "int weights": ("m.pth", with_weights(lambda v: v.to(torch.int32) if v.is_floating_point() else v),
                    "checkpoint {path} does not fit the model: keys of the wrong dtype: backbone.bn1.bias "
                    "(checkpoint torch.int32 vs model torch.float32)"),
    "newer version's config": ("m.pth", with_config(attention_heads=8, dropout=0.1),
                               "checkpoint {path}: config keys this version does not know: attention_heads, dropout "
                               "(written by a newer version?)"),
    "config a string": ("m.pth", with_entries(config="r18_giam"),
                        "checkpoint {path}: config must be a dict of model options, got str"),
    "config value a string": ("m.pth", with_config(depth="eighteen"),
                              "checkpoint {path}: config values of the wrong type: depth='eighteen' (expected int)"),
    "config tuple too short": ("m.pth", with_config(pixel_mean=[1.0, 2.0]),
                               "checkpoint {path}: config values of the wrong type: pixel_mean=[1.0, 2.0] (expected tuple)"),
    "config negative size": ("m.pth", with_config(num_masks=-5),
                             "checkpoint {path}: this version cannot build the model it describes"),
    "config unknown depth": ("m.pth", with_config(depth=7),
                             "checkpoint {path}: this version cannot build the model it describes (unsupported "
                             "ResNet depth 7"),
    "class names a string": ("m.pth", with_entries(class_names="cup,fork"),
                             "checkpoint {path}: class_names must be a list of strings, got 'cup,fork'"),
    "class names numbers": ("m.pth", with_entries(class_names=[1, 2]),
                            "checkpoint {path}: class_names must be a list of strings, got [1, 2]"),
    "preset a number": ("m.pth", with_entries(preset=18), "checkpoint {path}: preset must be a preset name, got 18"),
    "unknown preset": ("m.pth", with_entries(preset="r200_giam"),
                       "checkpoint {path}: preset 'r200_giam' is not one this version knows"),
    "label mapping of strings": ("m.pth", with_entries(label_to_category_id=["a", "b"]),
                                 "checkpoint {path}: label_to_category_id must be a list of integers"),
    "safetensors config not JSON": ("m.safetensors", safetensors_with(config="{depth: 18"),
                                    "checkpoint {path}: metadata 'config' is not JSON ('{{depth: 18')"),
    "safetensors config a list": ("m.safetensors", safetensors_with(config="[18, 34]"),
                                  "checkpoint {path}: config must be a dict of model options, got list"),
    "safetensors class names a number": ("m.safetensors", safetensors_with(class_names="3"),
                                         "checkpoint {path}: class_names must be a list of strings, got 3"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malformed_checkpoint_is_one_value_error_naming_the_file_and_the_cause(saved, tmp_path, case):
    name, write, expected = HOSTILE[case]
    path = tmp_path / name
    write(saved, path)
    with pytest.raises(ValueError) as error:
        load_model(path)
    message = str(error.value)
    assert message.startswith(expected.format(path=path)), message
    assert "\n" not in message


def test_every_malformed_checkpoint_fails_the_same_way_in_load_checkpoint(saved, tmp_path):
    model = build_model("r18_giam", num_classes=2)
    for case, (name, write, expected) in HOSTILE.items():
        if case in ("config negative size", "config unknown depth"):
            continue   # the weights fit the given model; only load_model builds one from the config
        path = tmp_path / case.replace(" ", "_") / name
        path.parent.mkdir()
        write(saved, path)
        with pytest.raises(ValueError) as error:
            load_checkpoint(model, path)
        assert str(error.value).startswith(expected.format(path=path)), (case, str(error.value))


def test_official_layout_with_a_scalar_class_head_is_refused_by_name(saved, tmp_path):
    state = dict(saved["model"])
    state["decoder.inst_branch.cls_score.bias"] = torch.tensor(0.0)
    torch.save({"model": state}, tmp_path / "scalar.pth")
    with pytest.raises(ValueError, match=r"mis-shaped keys: decoder.inst_branch.cls_score.bias \(checkpoint \(\)"):
        load_model(tmp_path / "scalar.pth", preset="r18_giam")


def test_a_good_checkpoint_still_loads_with_its_metadata(saved, tmp_path):
    path = tmp_path / "good.safetensors"
    safetensors_with(config=json.dumps(saved["config"]), preset=json.dumps("r18_giam"),
                     class_names=json.dumps(["cup", "fork"]))(saved, path)
    model, report = load_model(path)
    assert report.metadata["class_names"] == ["cup", "fork"] and model.num_classes == 2
