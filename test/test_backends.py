"""Backend selection: providers, clear errors for what is missing, and configured fallbacks; the torch
backend's CUDA-graph bookkeeping (with a stand-in for the capture, so it runs without a GPU)."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from sparseinst_core import Predictor, build_model
from sparseinst_core.inference.backends import (OnnxRuntimeBackend, TorchBackend, create_backend, import_onnxruntime,
                                                select_providers)
from sparseinst_core.inference.cuda_graphs import CapturedGraph, CudaGraphRunner
from sparseinst_core.inference.defaults import BACKENDS
from sparseinst_core.inference.device import HostToDevice

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


def test_onnxruntime_telemetry_is_off_unless_the_environment_says_otherwise():
    code = ("import os; from sparseinst_core.inference.backends import import_onnxruntime; import_onnxruntime(); "
            "print(os.environ['ORT_DISABLE_TELEMETRY'])")
    environment = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    for given, expected in ((None, "1"), ("0", "0")):
        env = environment if given is None else {**environment, "ORT_DISABLE_TELEMETRY": given}
        printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert printed.stdout.strip() == expected


def test_every_backend_name_is_known():
    assert BACKENDS == ("torch", "onnxruntime", "openvino")


def test_torch_backend_on_the_cpu_takes_cpu_batches_and_ignores_cuda_graphs(model):
    backend = TorchBackend(model, device="cpu", cuda_graphs=True)
    assert backend.graphs is None
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.inference_mode():
        expected = backend.forward(images)
    outputs = backend(images.double())                   # any float batch: cast on the way in
    assert all(torch.equal(outputs[key], expected[key]) for key in expected)


def test_host_to_device_on_the_cpu_only_casts():
    images = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    moved = HostToDevice(torch.device("cpu"))(images)
    assert moved.dtype == torch.float32 and torch.equal(moved, images.float())


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: replay() runs the recorded function on the static input."""

    def __init__(self, forward, static_input, static_outputs):
        self.forward, self.static_input, self.static_outputs = forward, static_input, static_outputs
        self.replays = 0

    def replay(self):
        self.replays += 1
        for key, value in self.forward(self.static_input).items():
            self.static_outputs[key].copy_(value)


class FakeCapture:
    def __init__(self, fail=False):
        self.shapes, self.fail = [], fail

    def __call__(self, forward, example):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.shapes.append(tuple(example.shape))
        static_input = example.clone()
        static_outputs = forward(static_input)
        return CapturedGraph(FakeGraph(forward, static_input, static_outputs), static_input, static_outputs)


def double(images):
    return {"out": images * 2}


def runner_on(shapes, max_graphs=2, capture=None):
    runner = CudaGraphRunner(double, max_graphs=max_graphs, capture=capture or FakeCapture())
    results = [runner(torch.full(shape, float(i))) for i, shape in enumerate(shapes)]
    return runner, results


def test_a_shape_is_captured_at_its_second_call_then_replayed():
    capture = FakeCapture()
    runner, results = runner_on([(1, 3, 4, 4)] * 4, capture=capture)
    assert capture.shapes == [(1, 3, 4, 4)]                          # captured once, at the second call
    graph = runner.graphs[((1, 3, 4, 4), torch.float32, "cpu")].graph
    assert graph.replays == 3                                         # the second call onwards
    assert [r["out"][0, 0, 0, 0].item() for r in results] == [0, 2, 4, 6]   # each call's own input


def test_a_size_that_keeps_changing_runs_eagerly():
    capture = FakeCapture()
    sizes = [4 + 4 * i for i in range(12)]
    runner, results = runner_on([(1, 3, size, size) for size in sizes], capture=capture)
    assert capture.shapes == [] and not runner.graphs
    assert [r["out"].shape[-1] for r in results] == sizes


def test_cameras_whose_batches_alternate_between_sizes_capture_each_size():
    capture = FakeCapture()   # a rig of two sizes: one batch per padded size in each cycle
    runner, results = runner_on([(2, 3, 4, 4), (1, 3, 8, 8)] * 3, capture=capture)
    assert capture.shapes == [(2, 3, 4, 4), (1, 3, 8, 8)]
    assert [r["out"].shape[-1] for r in results] == [4, 8] * 3


def test_at_most_max_graphs_shapes_least_recently_used_released_first():
    shapes = [(1, 3, 4, 4)] * 2 + [(1, 3, 8, 8)] * 2 + [(1, 3, 4, 4)] + [(2, 3, 4, 4)] * 2
    runner, _ = runner_on(shapes, max_graphs=2)
    assert [key[0] for key in runner.graphs] == [(1, 3, 4, 4), (2, 3, 4, 4)]   # (1, 3, 8, 8) released


def test_replayed_outputs_are_copies_the_next_replay_does_not_overwrite():
    runner, results = runner_on([(1, 3, 4, 4)] * 3)
    assert results[1]["out"][0, 0, 0, 0].item() == 2 and results[2]["out"][0, 0, 0, 0].item() == 4


def test_a_failed_capture_warns_once_and_runs_eagerly_from_then_on():
    capture = FakeCapture(fail=True)
    runner = CudaGraphRunner(double, capture=capture)
    images = torch.ones(1, 3, 4, 4)
    runner(images)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed.*running eagerly"):
        outputs = runner(images)
    assert torch.equal(outputs["out"], images * 2) and not runner.enabled
    capture.fail = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # no second warning
        runner(images)
    assert capture.shapes == [] and not runner.graphs                 # no further attempt
    with pytest.raises(ValueError, match="max_graphs"):
        CudaGraphRunner(double, max_graphs=0)
