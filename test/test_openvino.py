"""The OpenVINO backend: the same agreement with PyTorch as ONNX Runtime (1e-4 relative in fp32), bf16 only
where the CPU runs it, and clear errors for what it cannot run."""
import sys

import numpy as np
import pytest
import torch
from test_export import randomized, relative_error
from test_optimize import mask_iou

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference.backends import TorchBackend, create_backend
from sparseinst_core.inference.export import export_onnx
from sparseinst_core.inference.openvino_backend import OpenVinoBackend, check_openvino_settings, import_openvino

ov = pytest.importorskip("openvino")
SIZE = (96, 160)   # C5 3x5: the pyramid pools do not divide it
CAPABILITIES = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEINST_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model():
    return randomized("r18_giam")


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", SIZE)


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * 255


def test_fp32_matches_torch(model, onnx_file, images):
    with torch.inference_mode():
        expected = model(images)
    actual = OpenVinoBackend(onnx_file, device="cpu")(images)
    for key in expected:
        assert actual[key].dtype == torch.float32 and actual[key].shape == expected[key].shape
        assert relative_error(actual[key], expected[key]) < 1e-4, key


@pytest.mark.skipif("BF16" not in CAPABILITIES, reason=f"this CPU does not run OpenVINO in bf16 ({CAPABILITIES})")
def test_bf16_is_close_to_fp32(model, onnx_file, images):
    with torch.inference_mode():
        expected = model(images)
    actual = OpenVinoBackend(onnx_file, device="cpu", precision="bf16")(images)
    assert relative_error(actual["pred_logits"], expected["pred_logits"]) < 0.05
    ious = [mask_iou(a > 0, b > 0) for a, b in zip(actual["pred_masks"][0].numpy(), expected["pred_masks"][0].numpy())]
    assert np.mean(ious) > 0.9


def test_outputs_are_not_overwritten_by_the_next_call(onnx_file, images):
    backend = OpenVinoBackend(onnx_file, device="cpu")
    first = backend(images)
    kept = {key: value.clone() for key, value in first.items()}
    backend(torch.zeros_like(images))
    assert all(torch.equal(first[key], kept[key]) for key in kept)


def test_predictor_on_openvino_matches_torch_predictor(model):
    image = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)   # -> 96x160, no padding
    options = dict(min_size=96, max_size=160, score_threshold=0.0, device="cpu")
    expected = Predictor(model, **options)(image)
    predictor = Predictor(model, backend="openvino", **options)
    assert predictor.backend.name == "openvino" and predictor.device.type == "cpu"
    actual = predictor(image)
    np.testing.assert_allclose(actual.scores, expected.scores, rtol=1e-4)
    np.testing.assert_array_equal(actual.labels, expected.labels)
    assert (actual.masks != expected.masks).mean() < 1e-3


def test_precision_and_device_errors():
    assert check_openvino_settings("cpu", "fp32", ["FP32", "INT8"]) == "f32"
    assert check_openvino_settings("auto", "bf16", ["FP32", "BF16"]) == "bf16"
    with pytest.raises(ValueError, match="does not run OpenVINO in bf16.*FP32, INT8"):
        check_openvino_settings("cpu", "bf16", ["FP32", "INT8"])
    with pytest.raises(ValueError, match="not available with openvino"):
        check_openvino_settings("cpu", "fp16", ["FP32", "FP16"])
    with pytest.raises(ValueError, match="runs on the CPU"):
        check_openvino_settings("cuda", "fp32", ["FP32"])


def test_settings_are_checked_before_exporting(monkeypatch):
    exports = []
    monkeypatch.setattr("sparseinst_core.inference.export.export_onnx", lambda *args, **kwargs: exports.append(args))
    with pytest.raises(ValueError, match="runs on the CPU"):
        create_backend("openvino", model=build_model("r18_giam", num_classes=2), device="cuda")
    with pytest.raises(ValueError, match="not available with openvino"):
        create_backend("openvino", model=build_model("r18_giam", num_classes=2), device="cpu", precision="fp16")
    assert exports == []


def test_input_size_is_fixed(onnx_file):
    backend = OpenVinoBackend(onnx_file, device="cpu")
    with pytest.raises(ValueError, match=r"takes \(96, 160\) inputs"):
        backend(torch.zeros(1, 3, 64, 64))


def test_deformable_models_are_refused_before_exporting_and_can_fall_back():
    model = build_model("r50vd_dcn_giam", num_classes=2)
    with pytest.raises(RuntimeError, match="cannot run deformable convolutions.*torch or onnxruntime"):
        create_backend("openvino", model=model, device="cpu")
    with pytest.warns(RuntimeWarning, match="falling back to 'torch'"):
        backend = create_backend("openvino", model=model, device="cpu", fallback="torch")
    assert isinstance(backend, TorchBackend)


def test_missing_openvino_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)   # makes `import openvino` fail
    with pytest.raises(RuntimeError, match="pip install openvino"):
        import_openvino()
    with pytest.raises(RuntimeError, match="pip install openvino"):
        create_backend("openvino", model=build_model("r18_giam", num_classes=2), device="cpu")
