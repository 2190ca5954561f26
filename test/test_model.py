"""The network: output contract, every preset's construction, parameter counts, input checks."""
import pytest
import torch
import torchvision

from official_reference import official_layout
from sparseinst_core import PRESETS, build_model
from sparseinst_core.model.backbone import ResNet

OFFICIAL_OPTIONS = {
    "r50_base": dict(decoder="iam"), "r50_giam": {}, "r50_giam_soft": dict(decoder="giam_soft"),
    "r50_dcn_giam": dict(dcn=(False, False, True, True)), "r50vd_giam": dict(vd=True),
    "r50vd_dcn_giam": dict(vd=True, dcn=(False, False, True, True)), "r101_giam": dict(depth=101),
    "r101_dcn_giam": dict(depth=101, dcn=(False, False, True, True)),
}


def test_output_contract():
    model = build_model("r18_giam", num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96) * 255)
    assert out["pred_logits"].shape == (2, 100, 7)
    assert out["pred_scores"].shape == (2, 100, 1)
    assert out["pred_masks"].shape == (2, 100, 16, 24)


@pytest.mark.parametrize("preset", sorted(OFFICIAL_OPTIONS))
def test_official_preset_has_exactly_the_official_parameters(preset):
    """Trainable parameters = the official layout minus frozen batch-norm statistics and affines."""
    layout = official_layout(**OFFICIAL_OPTIONS[preset])
    frozen_bn = {k for k in layout if k.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
    frozen_bn |= {k.rsplit(".", 1)[0] + "." + n for k in frozen_bn for n in ("weight", "bias")}
    expected = sum(torch.Size(s).numel() for k, s in layout.items() if k not in frozen_bn)
    model = build_model(preset)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_light_preset_uses_a_resnet18_trunk():
    model = build_model("r18_giam")
    reference = torchvision.models.resnet18(weights=None)
    trunk = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in model.backbone.parameters()) == trunk
    # torchvision names, so ImageNet weights of torchvision load into the trunk directly
    missing, unexpected = model.backbone.load_state_dict(reference.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"fc.weight", "fc.bias"}


def test_every_preset_builds_and_runs():
    for name in PRESETS:
        model = build_model(name, num_classes=3).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 64, 64))
        assert out["pred_masks"].shape == (1, 100, 16, 16), name


def test_unknown_preset_and_option_are_named():
    with pytest.raises(ValueError, match="r50_gaim"):
        build_model("r50_gaim")
    with pytest.raises(ValueError, match="num_mask"):
        build_model("r18_giam", num_mask=10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("r18_giam", num_classes=0)


@pytest.mark.parametrize("shape", [(1, 3, 60, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_bad_input_shapes_are_rejected(shape):
    model = build_model("r18_giam").eval()
    with pytest.raises(ValueError):
        model(torch.zeros(shape))


def test_backbone_strides():
    features = ResNet(50).eval()(torch.zeros(1, 3, 128, 64))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "res3": (512, 16, 8), "res4": (1024, 8, 4), "res5": (2048, 4, 2)}


def test_group_iam_pools_with_each_group_of_maps():
    """Changing only group 2's activation maps changes the output: all groups feed every query."""
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=3).eval()
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        before = model(images)["pred_logits"].clone()
        branch = model.decoder.inst_branch
        n = branch.num_masks
        branch.iam_conv.bias[2 * n:3 * n] += 3.0
        after = model(images)["pred_logits"]
    assert not torch.allclose(before, after)
