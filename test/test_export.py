"""ONNX export: static adaptive pooling, and ONNX Runtime reproducing PyTorch within 1e-4 relative."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference.backends import OnnxRuntimeBackend
from sparseinst_core.inference.export import StaticAdaptiveAvgPool2d, adaptive_pool_matrix, export_onnx
from sparseinst_core.io.onnx_format import read_metadata
from sparseinst_core.tools.export import main


def relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("input_size", [(20, 27), (3, 5), (7, 7), (1, 2)])
@pytest.mark.parametrize("output_size", [1, 2, 3, 6])
def test_static_pooling_equals_adaptive_pooling(input_size, output_size):
    x = torch.randn(2, 4, *input_size)
    expected = nn.AdaptiveAvgPool2d(output_size)(x)
    actual = StaticAdaptiveAvgPool2d((output_size, output_size), input_size)(x)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_pool_matrix_rows_average_the_pytorch_bins():
    # 5 inputs into 3 bins: [0, 2), [1, 4), [3, 5)
    expected = torch.tensor([[.5, .5, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, .5, .5]], dtype=torch.float64)
    torch.testing.assert_close(adaptive_pool_matrix(5, 3), expected)


def test_static_pooling_rejects_other_sizes():
    with pytest.raises(ValueError, match="built for"):
        StaticAdaptiveAvgPool2d((3, 3), (4, 4))(torch.zeros(1, 1, 5, 5))


def randomized(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var"):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
            if hasattr(module, "conv2_offset"):
                nn.init.normal_(module.conv2_offset.weight, std=0.02)
    return model


@pytest.mark.parametrize("name,size,expected_opset", [
    ("r18_giam", (96, 160), 17),           # C5 3x5: the 2x2, 3x3 and 6x6 pools do not divide it
    ("r50vd_dcn_giam", (64, 96), 19),      # deep stem, avg-pool shortcut, DeformConv
])
def test_onnxruntime_matches_torch(tmp_path, name, size, expected_opset):
    model = randomized(name)
    path = export_onnx(model, tmp_path / "model.onnx", size, dynamic_batch=True)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == expected_opset
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["pred_logits", "pred_scores", "pred_masks"]
    assert not any(n.op_type.startswith("GlobalAveragePool") or "Adaptive" in n.op_type for n in proto.graph.node)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 255
    with torch.inference_mode():
        expected = model(images)
    actual = OnnxRuntimeBackend(path, device="cpu")(images)
    for key in expected:
        assert actual[key].shape == expected[key].shape
        assert relative_error(actual[key], expected[key]) < 1e-4, key


def test_metadata_round_trip(tmp_path):
    model = build_model("r18_giam", num_classes=3)
    path = export_onnx(model, tmp_path / "m.onnx", (64, 96))
    metadata = read_metadata(path)
    assert metadata["preset"] == "r18_giam" and metadata["input_size"] == (64, 96)
    assert metadata["batch_size"] == 1 and metadata["config"]["num_classes"] == 3


@pytest.mark.parametrize("size,opset,error", [((60, 96), None, "multiples of 32"), ((64, 96), 16, "opset 16")])
def test_bad_export_arguments(tmp_path, size, opset, error):
    with pytest.raises(ValueError, match=error):
        export_onnx(build_model("r18_giam", num_classes=2), tmp_path / "m.onnx", size, opset=opset)


def test_command_line_export_and_check(tmp_path, capsys):
    output = tmp_path / "cli.onnx"
    assert main(["--preset", "r18_giam", "--num-classes", "2", "--height", "64", "--width", "96",
                 "-o", str(output), "--check"]) == 0
    printed = capsys.readouterr().out
    assert output.is_file() and "pred_masks: max |onnxruntime - torch|" in printed
    errors = [float(line.rsplit("=", 1)[1]) for line in printed.splitlines() if "max |onnxruntime" in line]
    assert len(errors) == 3 and max(errors) < 1e-4


def test_predictor_from_onnx_matches_torch_predictor(tmp_path):
    """Same padded input size on both sides, so the instances must agree."""
    model = randomized("r18_giam")
    path = export_onnx(model, tmp_path / "m.onnx", (64, 96))
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # -> 64x96, no padding
    expected = Predictor(model, min_size=64, max_size=96, score_threshold=0.0, device="cpu")(image)
    onnx_predictor = Predictor.from_onnx(path, min_size=64, max_size=96, score_threshold=0.0, device="cpu")
    actual = onnx_predictor(image)
    np.testing.assert_allclose(actual.scores, expected.scores, rtol=1e-4)
    np.testing.assert_array_equal(actual.labels, expected.labels)
    assert (actual.masks != expected.masks).mean() < 1e-3
    # a batch-1 model runs a list one image at a time
    assert [len(r) for r in onnx_predictor([image, image])] == [100, 100]


def test_predictor_exports_for_onnxruntime_on_the_fly(tmp_path):
    model = build_model("r18_giam", num_classes=2)
    predictor = Predictor(model, min_size=64, max_size=96, device="cpu", backend="onnxruntime",
                          onnx_path=tmp_path / "auto.onnx")
    assert (tmp_path / "auto.onnx").is_file() and predictor.backend.input_size == (64, 96)
    assert predictor(np.zeros((30, 45, 3), np.uint8)).masks.shape[1:] == (30, 45)
    with pytest.raises(ValueError, match="does not fit the backend's fixed input"):
        predictor(np.zeros((45, 30, 3), np.uint8))          # portrait: 96x64 does not fit 64x96
