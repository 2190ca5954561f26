"""Official detectron2 checkpoints load onto every preset and reproduce the official forward pass."""
import pytest
import torch

from official_reference import official_forward, official_layout, random_official_state_dict
from sparseinst_core import build_model, load_checkpoint, load_model
from sparseinst_core.model.presets import PRESETS

OFFICIAL = {
    "r50_base": dict(depth=50, decoder="iam"),
    "r50_giam": dict(depth=50),
    "r50_giam_soft": dict(depth=50, decoder="giam_soft"),
    "r50_dcn_giam": dict(depth=50, dcn=(False, False, True, True)),
    "r50vd_giam": dict(depth=50, vd=True),
    "r50vd_dcn_giam": dict(depth=50, vd=True, dcn=(False, False, True, True)),
    "r101_giam": dict(depth=101),
    "r101_dcn_giam": dict(depth=101, dcn=(False, False, True, True)),
}


def test_every_official_preset_is_covered():
    assert set(OFFICIAL) == set(PRESETS) - {"r18_giam"}


@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_official_checkpoint_reproduces_official_outputs(preset, tmp_path):
    options = OFFICIAL[preset]
    state = random_official_state_dict(official_layout(**options), seed=hash(preset) % 1000)
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 269999}, path)   # the layout of detectron2's Checkpointer

    model = build_model(preset).eval()
    report = load_checkpoint(model, path)
    assert report.layout == "official"
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        ours = model(images)
        reference = official_forward(state, images, **options)
    for key in ("pred_logits", "pred_scores", "pred_masks"):
        assert ours[key].shape == reference[key].shape
        scale = reference[key].abs().max().item()
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-4, atol=1e-4 * max(scale, 1.0))


def test_official_checkpoint_with_other_class_count_is_loaded_by_load_model(tmp_path):
    state = random_official_state_dict(official_layout(num_classes=3))
    torch.save({"model": state}, tmp_path / "custom.pth")
    model, report = load_model(tmp_path / "custom.pth", preset="r50_giam")
    assert model.num_classes == 3 and report.layout == "official"


def test_official_checkpoint_with_stale_entries_is_accepted(tmp_path):
    """DDP prefixes, pixel statistics and BN counters carry no weights of ours and are dropped."""
    state = random_official_state_dict(official_layout())
    state = {f"module.{k}": v for k, v in state.items()}
    state["module.pixel_mean"] = torch.zeros(3, 1, 1)
    state["module.backbone.stem.conv1.norm.num_batches_tracked"] = torch.tensor(0)
    torch.save({"model": state}, tmp_path / "ddp.pth")
    load_checkpoint(build_model("r50_giam"), tmp_path / "ddp.pth")
