"""Benchmark helpers whose output the reported numbers depend on."""
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from sparseinst_core import build_model
from sparseinst_core.benchmark import calibrate_batch_norm


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
