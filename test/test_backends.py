"""Backend selection: providers, clear errors for what is missing, and configured fallbacks."""
import sys

import numpy as np
import pytest
import torch

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference.backends import (OnnxRuntimeBackend, TorchBackend, create_backend, import_onnxruntime,
                                     select_providers)

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def model():
    return build_model("r18_giam", num_classes=2).eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from sparseinst_core.inference.export import export_onnx
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", (64, 96))


@pytest.mark.parametrize("device,available,expected", [
    ("auto", ALL, ALL),                                              # TensorRT first when present
    ("auto", ["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
    ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cpu", ALL, ["CPUExecutionProvider"]),
])
def test_provider_preference(device, available, expected):
    assert select_providers(device, available) == expected


def test_cuda_without_gpu_provider_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no GPU provider.*onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unsupported device"):
        select_providers("mps", ALL)


@pytest.fixture
def no_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # makes `import onnxruntime` fail


def test_missing_onnxruntime_says_how_to_install(no_onnxruntime, model):
    with pytest.raises(RuntimeError, match="pip install onnxruntime"):
        import_onnxruntime()
    with pytest.raises(RuntimeError, match="pip install onnxruntime"):
        Predictor(model, min_size=64, max_size=96, device="cpu", backend="onnxruntime")


def test_missing_onnxruntime_falls_back_when_configured(no_onnxruntime, model):
    with pytest.warns(RuntimeWarning, match="falling back to 'torch'"):
        predictor = Predictor(model, min_size=64, max_size=96, device="cpu", backend="onnxruntime", fallback="torch")
    assert isinstance(predictor.backend, TorchBackend)
    assert predictor(np.zeros((64, 96, 3), np.uint8)).masks.shape[1:] == (64, 96)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_missing_gpu(model, onnx_file):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        TorchBackend(model, device="cuda")
    import onnxruntime
    if not any(p in onnxruntime.get_available_providers() for p in ALL[:2]):
        with pytest.raises(RuntimeError, match="no GPU provider"):
            OnnxRuntimeBackend(onnx_file, device="cuda")
    assert TorchBackend(model, device="auto").device.type == "cpu"       # 'auto' falls back to the CPU
    assert OnnxRuntimeBackend(onnx_file, device="auto").providers[-1] == "CPUExecutionProvider"


def test_unknown_names_are_rejected(model):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        create_backend("tensorflow", model=model)
    with pytest.raises(ValueError, match="unknown fallback backend"):
        create_backend("torch", model=model, fallback="caffe")
    with pytest.raises(ValueError, match="unknown postprocess"):
        Predictor(model, device="cpu", postprocess="approximate")


def test_onnxruntime_precision_and_input_errors(onnx_file):
    with pytest.raises(ValueError, match="not available with onnxruntime"):
        OnnxRuntimeBackend(onnx_file, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="needs the TensorRT provider"):
        OnnxRuntimeBackend(onnx_file, device="cpu", precision="fp16")
    backend = OnnxRuntimeBackend(onnx_file, device="cpu")
    with pytest.raises(ValueError, match=r"takes \(64, 96\) inputs"):
        backend(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="batches of 1"):
        backend(torch.zeros(2, 3, 64, 96))
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        OnnxRuntimeBackend(onnx_file.parent / "missing.onnx")


def test_a_file_without_sparseinst_metadata_is_rejected(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="no sparseinst metadata"):
        OnnxRuntimeBackend(tmp_path / "other.onnx", device="cpu")


def test_torch_backend_returns_fp32_for_every_precision(model):
    images = torch.rand(1, 3, 64, 64) * 255
    for optimize in (True, False):
        outputs = TorchBackend(model, device="cpu", precision="bf16", optimize=optimize)(images)
        assert all(v.dtype == torch.float32 for v in outputs.values())


def test_onnxruntime_threads_do_not_spin_after_a_run_unless_asked(onnx_file):
    """Spinning ORT threads would compete with the predictor's post-processing for the cores."""
    def spinning(backend):
        return backend.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert spinning(OnnxRuntimeBackend(onnx_file, device="cpu")) == "0"
    assert spinning(OnnxRuntimeBackend(onnx_file, device="cpu", spinning=True)) == "1"
