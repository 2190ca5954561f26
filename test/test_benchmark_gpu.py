"""`make bench-gpu` up to its CUDA check: exit status 2 without CUDA, and every step of the run exercised
on the CPU (tiny sizes), so the command a GPU machine runs has already run once."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseinst_core.inference.predictor import Instances
from sparseinst_core.tools import benchmark_gpu
from sparseinst_core.tools.benchmark_gpu import NO_CUDA_EXIT, Row, headline, match_instances, run, target_lines

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """The CPU runs below do many tiny forward passes: one torch thread keeps them quick on a busy machine
    (there, two spinning threads made each pass ten times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_without_cuda_it_exits_2_with_a_clear_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert benchmark_gpu.main(["--output-dir", str(tmp_path)]) == NO_CUDA_EXIT == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_module_command_exits_2_without_cuda(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sparseinst_core.tools.benchmark_gpu", "--output-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stderr
    assert "make bench-gpu" in done.stderr and list(tmp_path.iterdir()) == []


def test_every_step_runs_on_the_cpu_and_writes_both_reports(tmp_path, one_thread):
    lines = []
    results = run(torch.device("cpu"), tmp_path, presets=["r18_giam"], sizes=[64], precisions=["fp32"],
                  batches=(1, 2), seconds=0.01, min_calls=2, agreement=False, frame_shape=(48, 64), log=lines.append)
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    modes = ("cuda_graphs", "optimized", "eager")
    assert [(r["mode"], r["batch"]) for r in rows] == [(mode, batch) for mode in modes for batch in (1, 2)]
    assert all(r["input"] == [64, 96] and len(r["end_to_end_s"]) >= 2 and r["instances"] == 100 * r["batch"]
               for r in rows)
    assert not any(r["graph_captured"] for r in rows)                  # no graphs on the CPU, and the page says so
    page = (tmp_path / "gpu.md").read_text()
    assert page.count("| r18_giam | 64 | 64x96 | fp32 |") == 6 and page.count("capture failed: eager") == 2
    assert results["headline"] == {"single_stream_fps": None, "batch4_images_per_s": None}   # no r50 608 fp16 row
    assert any("not measured" in line for line in lines)


def test_rows_left_when_the_budget_is_spent_are_listed_as_skipped(tmp_path):
    results = run(torch.device("cpu"), tmp_path, presets=["r18_giam"], sizes=[64], precisions=["fp32"],
                  modes=("optimized",), batches=(1, 2), seconds=0.01, min_calls=1, budget_seconds=0.0,
                  agreement=False, log=lambda line: None)
    assert [r["summary"] for r in results["rows"]] == [{"skipped": "time budget of 0 s spent"}] * 2
    assert "skipped: time budget" in (tmp_path / "gpu.md").read_text()


def test_agreement_check_runs_on_the_cpu(one_thread):
    result = benchmark_gpu.check_agreement(torch.device("cpu"), scenes=1, reduced="fp32")
    assert set(result["fp32"]) == {"strict_eager", "strict_optimized_graphs", "strict_graph_captured",
                                   "tf32_eager", "tf32_optimized_graphs", "tf32_graph_captured"}
    assert result["fp32"]["strict_eager"] == 0.0 and result["fp32"]["strict_optimized_graphs"] < 1e-4
    assert result["fp32_ok"] and result["fp32"]["strict_graph_captured"] is False   # no graphs on the CPU
    reduced = result["reduced"]          # fp32 here: the same instances as the CPU's
    assert reduced["cpu_instances"] == reduced["gpu_instances"] > 0 and result["reduced_ok"]


def instances(masks, labels):
    masks = np.array(masks, dtype=bool)
    return Instances(np.ones(len(masks), np.float32), np.array(labels), masks)


def test_instances_are_matched_by_mask_overlap():
    a = [[1, 1, 0, 0]] * 2
    b = [[0, 0, 1, 1]] * 2
    half = [[1, 0, 0, 0]] * 2
    expected = instances([a, b], [0, 1])
    match = match_instances(instances([b, half], [1, 3]), expected)   # order differs, one label differs
    assert match["ious"] == [0.5, 1.0] and match["same_label"] == [False, True]
    assert match_instances(instances(np.zeros((0, 2, 4)), []), expected)["ious"] == [0.0, 0.0]


def test_targets_are_judged_on_the_best_r50_608_fp16_mode():
    def row(mode, batch, seconds):
        return Row("r50_giam", 608, [608, 832], "fp16", mode, batch, end_to_end_s=[seconds] * 3)
    rows = [row("eager", 1, 0.004), row("cuda_graphs", 1, 0.002), row("cuda_graphs", 4, 0.005)]
    best = headline(rows)
    assert best == {"single_stream_fps": pytest.approx(500), "batch4_images_per_s": pytest.approx(800)}
    lines = target_lines({"headline": best, "agreement": None})
    assert lines[0].endswith("(target >= 446): met") and lines[1].endswith("(target >= 1000): MISSED")
