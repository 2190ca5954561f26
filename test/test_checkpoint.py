"""Checkpoint files: round trips, clear errors for bad files, class-head re-initialisation."""
import math

import pytest
import torch

from sparseinst_core import build_model, load_checkpoint, load_model, save_checkpoint
from sparseinst_core.io.checkpoint import convert_official_state_dict


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("r18_giam", num_classes=4).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_keeps_weights_and_metadata(model, tmp_path, suffix):
    path = save_checkpoint(model, tmp_path / f"m{suffix}", class_names=["a", "b", "c", "d"])
    loaded, report = load_model(path)
    assert report.metadata["class_names"] == ["a", "b", "c", "d"]
    assert loaded.preset == "r18_giam" and loaded.config == model.config
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_training_label_mapping_is_reported(model, tmp_path):
    """train.py records the dataset category id of each label; evaluation reads it from the report."""
    path = save_checkpoint(model, tmp_path / "m.pth", label_to_category_id=[3, 5, 8, 13])
    assert load_model(path)[1].metadata["label_to_category_id"] == [3, 5, 8, 13]


def test_save_is_atomic(model, tmp_path):
    save_checkpoint(model, tmp_path / "m.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]


def test_detectron2_names_are_mapped():
    renamed = convert_official_state_dict({
        "backbone.stem.conv1.weight": 0, "backbone.stem.conv1.norm.running_var": 0,
        "backbone.res2.0.conv1.norm.running_var": 0, "backbone.res3.0.shortcut.weight": 0,
        "backbone.res4.2.shortcut.norm.bias": 0, "backbone.res5.1.conv2_offset.weight": 0,
        "backbone.layer1.0.conv1.weight": 0, "encoder.fpn_laterals.0.weight": 0,
        "decoder.inst_branch.iam_conv.weight": 0, "pixel_mean": 0})
    assert set(renamed) == {
        "backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer1.0.bn1.running_var",
        "backbone.layer2.0.downsample.0.weight", "backbone.layer3.2.downsample.1.bias",
        "backbone.layer4.1.conv2_offset.weight", "backbone.layer1.0.conv1.weight",
        "encoder.fpn_laterals.0.weight", "decoder.inst_branch.iam_conv.weight"}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_checkpoint(build_model("r18_giam"), tmp_path / "nothere.pth")


def test_checkpoint_that_is_not_a_dict(model, tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a checkpoint dict"):
        load_checkpoint(model, tmp_path / "list.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(model, tmp_path, suffix):
    path = save_checkpoint(model, tmp_path / f"m{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="could not read"):
        load_checkpoint(model, path)


def test_file_with_code_is_refused(model, tmp_path):
    import argparse  # any importable class stands for code that unpickling would construct
    torch.save({"model": model.state_dict(), "payload": argparse.Namespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="cannot run code"):
        load_checkpoint(model, tmp_path / "evil.pth")


def test_mismatch_names_missing_unexpected_and_misshaped_keys(model, tmp_path):
    state = dict(model.state_dict())
    del state["encoder.fusion.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    state["decoder.inst_branch.mask_kernel.bias"] = torch.zeros(3)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as error:
        load_checkpoint(model, tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing keys: encoder.fusion.weight" in message
    assert "unexpected keys: decoder.extra.weight" in message
    assert "decoder.inst_branch.mask_kernel.bias (checkpoint (3,) vs model (64,))" in message


def test_other_class_count_needs_the_explicit_option(model, tmp_path, caplog):
    path = save_checkpoint(model, tmp_path / "four.pth")
    target = build_model("r18_giam", num_classes=9)
    with pytest.raises(ValueError, match="reinit_class_head=True"):
        load_checkpoint(target, path)
    head = target.decoder.inst_branch.cls_score
    with torch.no_grad():   # a head that is not fresh (e.g. the model was trained before): it must be reset
        head.weight.fill_(1.0)
        head.bias.fill_(1.0)
    with caplog.at_level("WARNING", logger="sparseinst_core.io.checkpoint"):
        report = load_checkpoint(target, path, reinit_class_head=True)
    assert report.reinitialised == ["decoder.inst_branch.cls_score.weight", "decoder.inst_branch.cls_score.bias"]
    assert head.weight.shape == (9, head.weight.shape[1]) and head.weight.abs().max() < 0.1   # std 0.01 init
    assert torch.allclose(head.bias, torch.full((9,), -math.log(99)))                      # prior 0.01
    assert torch.equal(target.encoder.fusion.weight, model.encoder.fusion.weight)
    assert "class head was re-initialised" in caplog.text and "the model 9" in caplog.text


@pytest.mark.parametrize("fraction", [0.0001, 0.5, 0.999])
def test_truncated_legacy_pickle_file(model, tmp_path, fraction):
    """Pre-zip torch files are a plain pickle stream: cut anywhere, they read as corrupt, not as code."""
    path = tmp_path / "legacy.pth"
    torch.save({"model": model.state_dict()}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(model, path)
