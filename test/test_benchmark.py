"""The speed benchmark: the helpers its numbers depend on, and one tiny run of the command end to end."""
import json
import subprocess
import sys

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from sparseinst_core import build_model
from sparseinst_core.benchmark import main
from sparseinst_core.inference.device import PRECISION_DTYPES
from sparseinst_core.tools.benchmark import measure
from sparseinst_core.tools.benchmark.measure import calibrate_batch_norm
from sparseinst_core.tools.benchmark.report import fastest_paths, read_results, write_reports
from sparseinst_core.tools.benchmark.results import VariantResult
from sparseinst_core.tools.benchmark.variants import (REFERENCE, VARIANTS, Measured, available_variants,
                                                      interleaved_end_to_end, speed_ups)


def variant_result(backend, end_to_end_ms=100.0, rounds=(), precision="fp32") -> VariantResult:
    return VariantResult(preset="p", backend=backend, precision=precision, size=640, input=[640, 864], device="cpu",
                         backbone_ms=None, encoder_ms=None, decoder_ms=None, network_ms=end_to_end_ms,
                         postprocess_ms=0.0, instances=100, end_to_end_ms=end_to_end_ms, fps=1e3 / end_to_end_ms,
                         postprocess_share=0.0, gflops=1.0, achieved_gflops=1.0, fraction_of_peak=0.5,
                         end_to_end_rounds_ms=list(rounds))


def test_the_report_names_the_fastest_path_of_each_preset():
    rows = [variant_result("eager", 300.0), variant_result("openvino", 120.0, precision="bf16"),
            variant_result("onnxruntime", 150.0)]
    lines = fastest_paths(rows)
    table = [line for line in lines if line.startswith("| p |")]
    assert len(table) == 2                                  # at 640, and over all sizes
    assert all("**openvino bf16**" in line and "onnxruntime fp32" in line for line in table)


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
    measured = [Measured(variant_result(name), {}, lambda image, name=name: calls.append(name))
                for name in ("eager", "optimized", "onnxruntime")]
    interleaved_end_to_end(measured, torch.device("cpu"), rounds=3)
    assert calls == ["eager", "optimized", "onnxruntime"] * 3
    assert all(len(entry.result.end_to_end_rounds_ms) == 3 for entry in measured)


def test_speed_up_ratios_pair_the_rounds():
    # the load rose during the run: best-of times mislead, per-round ratios do not
    rows = [variant_result("eager", 100.0, [100.0, 200.0, 300.0]),
            variant_result("optimized", 90.0, [50.0, 100.0, 150.0])]
    (ratio,) = [r for r in speed_ups(rows) if r.ratio.startswith("optimized fp32 vs eager")]
    assert ratio.end_to_end == pytest.approx(100 / 90)
    assert ratio.end_to_end_interleaved == pytest.approx(2.0)
    assert ratio.end_to_end_interleaved_range == [pytest.approx(2.0), pytest.approx(2.0)]


def test_variants_left_out_on_request_or_where_they_cannot_run():
    names = [v.name for v in available_variants(torch.device("cpu"), skip_backends=("onnxruntime",))]
    assert names[0] == REFERENCE.name == "eager fp32"
    assert "optimized fp32" in names
    assert "optimized fp16" not in names                  # CUDA only
    assert not any(name.startswith("onnxruntime") for name in names)
    assert len(names) < len(VARIANTS)


def test_measuring_and_variant_modules_import_no_optional_dependency():
    """What a GPU machine with only torch/torchvision/OpenCV/NumPy can import: the whole benchmark package."""
    optional = ("pycocotools", "scipy", "matplotlib", "rclpy", "onnx", "onnxruntime", "openvino")
    code = ("import sys, sparseinst_core.tools.benchmark.variants, sparseinst_core.tools.benchmark.cli; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({optional!r})))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_exits_2_before_measuring(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cuda", "--presets", "r50_giam", "r18_giam", "--sizes", "448", "608", "--no-maskrcnn"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "no CUDA GPU" in captured.err and "matmul peak" not in captured.out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`python -m sparseinst_core.benchmark` on r18_giam at size 64 into a temporary folder, on one thread;
    matmul peaks recorded (device, dtype) by a spy that measures them on small matrices, to stay fast."""
    output_dir = tmp_path_factory.mktemp("benchmark")
    peaks_measured = []
    real_rate = measure.matmul_rate

    def counting_rate(device, dtype, size, repeats):
        peaks_measured.append((device.type, dtype))
        return real_rate(device, dtype, size=256, repeats=1)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(measure, "matmul_rate", counting_rate)
        try:
            assert main(["--presets", "r18_giam", "--sizes", "64", "--repeats", "1", "--rounds", "2", "--device", "cpu",
                         "--threads", "1", "--no-maskrcnn", "--no-profile", "--output-dir", str(output_dir)]) == 0
        finally:
            torch.set_num_threads(threads)
    return output_dir, peaks_measured


def test_the_matmul_peak_is_measured_once_per_device_and_precision(tiny_run):
    output_dir, peaks_measured = tiny_run
    results = read_results(output_dir / "benchmark.json")
    used = {("cpu", PRECISION_DTYPES[p]) for p in ["fp32"] + [row.precision for row in results.rows]}
    assert sorted(peaks_measured, key=str) == sorted(used, key=str)
    assert set(results.matmul_peak_gflops) == {"fp32"} | {row.precision for row in results.rows}


def test_a_tiny_run_writes_typed_rows_to_json_and_markdown(tiny_run):
    output_dir, _ = tiny_run
    results = read_results(output_dir / "benchmark.json")
    assert json.loads((output_dir / "benchmark.json").read_text()) == results.to_dict()
    paths = [(row.backend, row.precision) for row in results.rows]
    assert paths[0] == ("eager", "fp32") and ("optimized", "fp32") in paths
    for row in results.rows:
        assert isinstance(row, VariantResult)
        assert (row.preset, row.size, row.input, row.batch) == ("r18_giam", 64, [64, 96], 1)
        assert row.instances == 100                                  # threshold 0: every query post-processed
        assert row.fps == pytest.approx(1e3 / row.end_to_end_ms)
        assert len(row.end_to_end_rounds_ms) == 2
        assert (row.backbone_ms is None) == (row.backend in ("onnxruntime", "openvino"))
    assert {(a.backend, a.precision) for a in results.agreement} == set(paths[1:])
    assert all(a.max_relative_error < 1e-3 for a in results.agreement if a.precision == "fp32")
    assert [r.ratio for r in results.ratios][0].startswith("optimized fp32 vs eager fp32")

    table = [line for line in (output_dir / "benchmark.md").read_text().splitlines()
             if line.startswith("| r18_giam |") and line.count("|") == 16]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [(c[1], c[2], int(c[3]), float(c[11])) for c in cells] == [
        (r.backend, r.precision, r.size, round(r.end_to_end_ms, 1)) for r in results.rows]
    assert (output_dir / "benchmark.png").stat().st_size > 0



def test_without_matplotlib_the_reports_are_written_without_the_plot(tiny_run, tmp_path, monkeypatch):
    output_dir, _ = tiny_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # as on a GPU machine that lacks it
    write_reports(read_results(output_dir / "benchmark.json"), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["benchmark.json", "benchmark.md"]
    assert (tmp_path / "benchmark.md").read_text() == (output_dir / "benchmark.md").read_text()
