"""Benchmark helpers whose output the reported numbers depend on."""
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from sparseinst_core import build_model
from sparseinst_core.tools.benchmark import calibrate_batch_norm, interleaved_end_to_end, ratios


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_calibrated_batch_norms_hold_the_statistics_of_their_inputs(norm):
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=3, norm=norm)
    images = torch.rand(2, 3, 96, 128) * 255
    calibrate_batch_norm(model, images)

    # A second pass sees the inputs the calibration saw only if every layer was set in execution order.
    inputs = {}
    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(lambda m, args: inputs.__setitem__(m, args[0])) for m in norms]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    assert len(inputs) == len(norms) > 10
    for module, x in inputs.items():
        torch.testing.assert_close(module.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(module.running_var, x.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert not model.training


def test_interleaved_rounds_run_every_variant_in_turn():
    calls = []
    variants = {(name, "fp32"): ({"backend": name}, lambda image, name=name: calls.append(name))
                for name in ("eager", "optimized", "onnxruntime")}
    interleaved_end_to_end(variants, torch.device("cpu"), rounds=3)
    assert calls == ["eager", "optimized", "onnxruntime"] * 3
    assert all(len(row["end_to_end_rounds_ms"]) == 3 for row, _ in variants.values())


def test_speed_up_ratios_pair_the_rounds():
    def row(backend, best, rounds):
        return {"preset": "p", "size": 640, "backend": backend, "precision": "fp32", "end_to_end_ms": best,
                "network_ms": best, "end_to_end_rounds_ms": rounds}
    # the load rose during the run: best-of times mislead, per-round ratios do not
    rows = [row("eager", 100.0, [100.0, 200.0, 300.0]), row("optimized", 90.0, [50.0, 100.0, 150.0])]
    (ratio,) = [r for r in ratios(rows) if r["ratio"].startswith("optimized fp32 vs eager")]
    assert ratio["end_to_end"] == pytest.approx(100 / 90)
    assert ratio["end_to_end_interleaved"] == pytest.approx(2.0)
    assert ratio["end_to_end_interleaved_range"] == [pytest.approx(2.0), pytest.approx(2.0)]
