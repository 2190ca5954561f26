"""train.py and evaluate.py end to end on tiny synthetic data: kill and resume, NaN guard, bad input."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from sparseinst_core import load_checkpoint, load_model
from sparseinst_core.io.checkpoint import read_checkpoint
from training_fixtures import (
    EVALUATE_SCRIPT, TRAIN_SCRIPT, make_dataset, read_jsonl, run_script, script_env, train_args, train_losses,
    with_bad_images,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4)


def test_killed_run_resumes_on_the_same_trajectory(data, tmp_path):
    # Random crops and flips stay on (default --crop-probability), and a worker process loads the data.
    common = ["--max-iters", "8", "--warmup-iters", "2", "--lr-steps", "6", "--workers", "1",
              "--checkpoint-period", "100"]
    full = run_script(TRAIN_SCRIPT, train_args(data, tmp_path / "full", *common))
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), *train_args(data, out, *common)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=script_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        records = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
        if len(records) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "continue with --resume" in output
    stopped_at = torch.load(out / "last_checkpoint.pth", weights_only=True)["iteration"]
    assert 3 <= stopped_at < 8
    assert not (out / "model_final.pth").exists()

    resumed = run_script(TRAIN_SCRIPT, train_args(data, out, *common, "--resume"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {out / 'last_checkpoint.pth'} at iteration {stopped_at}" in resumed.stdout

    expected, got = train_losses(tmp_path / "full"), train_losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, 9))
    for iteration in range(1, 9):
        for name, value in expected[iteration].items():
            assert got[iteration][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (iteration, name)
    # The schedule continued too: lr after the step at 6 is a tenth.
    lrs = {r["iteration"]: r["lr"] for r in read_jsonl(out / "metrics.jsonl") if "lr" in r}
    assert lrs[8] == pytest.approx(1e-5) and lrs[5] == pytest.approx(1e-4)

    final_full, _ = read_checkpoint(tmp_path / "full" / "model_final.pth")
    final_resumed, meta = read_checkpoint(out / "model_final.pth")
    for name, value in final_full.items():
        torch.testing.assert_close(final_resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)

    # model_final.pth is a model file for the library, class names included.
    model, report = load_model(out / "model_final.pth")
    assert report.metadata["class_names"] == ["circle", "square", "triangle", "star", "ellipse", "hexagon"]
    assert model.num_classes == 6 and meta["preset"] == "r18_giam"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["segm/AP"] <= 1.0 and 0.0 <= metrics["segm/AP50"] <= 1.0
    assert (out / "training_curves.png").stat().st_size > 0
    assert any((out / "tensorboard").iterdir())

    # evaluate.py on the trained model writes the same kind of metrics.json.
    evaluation = run_script(EVALUATE_SCRIPT, [
        "--preset", "r18_giam", "--weights", str(out / "model_final.pth"), "--val-json",
        str(data["val_annotations"]), "--val-images", str(data["val_images"]), "--output-dir",
        str(tmp_path / "eval"), "--input-size", "64", "--max-size", "96", "--workers", "0", "--device", "cpu"])
    assert evaluation.returncode == 0, evaluation.stdout[-3000:] + evaluation.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["segm/AP"] == pytest.approx(metrics["segm/AP"], abs=1e-6)
    assert evaluated["segm/AP50"] == pytest.approx(metrics["segm/AP50"], abs=1e-6)
    assert (tmp_path / "eval" / "coco_instances_results.json").exists()
    assert "AP50" in evaluation.stdout


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(data, tmp_path):
    # An absurd learning rate: the first update makes the network produce NaN/inf at iteration 2.
    out = tmp_path / "nan"
    result = run_script(TRAIN_SCRIPT, train_args(data, out, "--max-iters", "5", "--lr", "1e6", "--warmup-iters", "0",
                                                 "--checkpoint-period", "1"))
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert "non-finite loss at iteration 2" in message
    for term in ("loss_ce", "loss_mask", "loss_dice", "loss_objectness"):
        assert term in message
    assert "Traceback" not in message
    state = torch.load(out / "last_checkpoint.pth", weights_only=True)
    assert state["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    load_checkpoint(load_model(out / "last_checkpoint.pth")[0], out / "last_checkpoint.pth")
    assert not (out / "model_final.pth").exists()


def test_corrupt_annotation_file_is_a_clear_error(data, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(data["train_annotations"].read_text()[:-100])
    result = run_script(TRAIN_SCRIPT, train_args({**data, "train_annotations": broken}, tmp_path / "out",
                                                 "--max-iters", "1"))
    assert result.returncode == 1
    assert f"{broken}: not valid JSON" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_image_is_a_clear_error(data, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(data["train_images"], images)
    missing = sorted(images.iterdir())[0]
    missing.unlink()
    result = run_script(TRAIN_SCRIPT, train_args({**data, "train_images": images}, tmp_path / "out",
                                                 "--max-iters", "1"))
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert f"training set: 1 of the 8 images of {data['train_annotations']} cannot be used" in message
    assert f"'{missing.name}': file not found" in message and "Traceback" not in message


def snapshot(folder):
    """Every file under folder with its size, modification time and content hash."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_finished_run_is_never_silently_replaced(data, tmp_path):
    out = tmp_path / "run"
    first = run_script(TRAIN_SCRIPT, train_args(data, out, "--max-iters", "3"))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = snapshot(out)

    again = run_script(TRAIN_SCRIPT, train_args(data, out, "--max-iters", "3"))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"error: --output-dir {out} holds a training run (last_checkpoint.pth, model_final.pth, metrics.jsonl, "
        "metrics.json); pass --resume to continue it or --overwrite to delete it and start afresh")
    assert snapshot(out) == before   # not even log.txt was appended to

    fresh = run_script(TRAIN_SCRIPT, train_args(data, out, "--max-iters", "2", "--overwrite"))
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert sorted(r["iteration"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r) == [1, 2]
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 2
    assert len(list((out / "tensorboard").iterdir())) == 1           # no curves of the old run
    assert (out / "log.txt").read_text().count("model r18_giam") == 1


def test_bad_images_are_all_listed_before_the_first_iteration(data, tmp_path):
    bad, problems = with_bad_images(data, tmp_path / "bad")
    out = tmp_path / "out"
    result = run_script(TRAIN_SCRIPT, train_args(bad, out, "--max-iters", "2"))
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert f"training set: 4 of the 8 images of {bad['train_annotations']} cannot be used (4 problem(s)" in message
    for image_id, problem in problems.items():
        assert f"  image {image_id} " in message and problem in message, (image_id, problem)
    assert "--skip-bad-images" in message and "Traceback" not in message
    assert not (out / "metrics.jsonl").exists() and not (out / "last_checkpoint.pth").exists()


def test_skip_bad_images_trains_on_the_rest_and_lists_them(data, tmp_path):
    bad, problems = with_bad_images(data, tmp_path / "bad")
    out = tmp_path / "out"
    result = run_script(TRAIN_SCRIPT, train_args(bad, out, "--max-iters", "2", "--skip-bad-images"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"training set: skipping 4 of 8 images (4 problem(s), listed in {out / 'skipped_images.json'})" \
        in result.stdout + result.stderr
    skipped = json.loads((out / "skipped_images.json").read_text())
    assert list(skipped) == ["training set"]
    assert {entry["image_id"]: entry["problem"] for entry in skipped["training set"]}.keys() == problems.keys()
    assert all(problems[entry["image_id"]] in entry["problem"] for entry in skipped["training set"])
    assert "training set 4 images" in result.stdout and (out / "model_final.pth").exists()


def test_evaluate_lists_bad_images_before_loading_the_model(data, tmp_path):
    bad, problems = with_bad_images(data, tmp_path / "bad")
    result = run_script(EVALUATE_SCRIPT, ["--preset", "r18_giam", "--weights", str(tmp_path / "none.pth"),
                                          "--val-json", str(bad["train_annotations"]),
                                          "--val-images", str(bad["train_images"]), "--output-dir", str(tmp_path)])
    assert result.returncode == 1
    message = result.stdout + result.stderr
    assert "evaluation set: 4 of the 8 images" in message and "Traceback" not in message
    assert all(problem in message for problem in problems.values())


def test_evaluate_reports_a_missing_weights_file(data, tmp_path):
    result = run_script(EVALUATE_SCRIPT, ["--preset", "r18_giam", "--weights", str(tmp_path / "none.pth"),
                                          "--val-json", str(data["val_annotations"]),
                                          "--val-images", str(data["val_images"]), "--output-dir", str(tmp_path)])
    assert result.returncode == 1
    assert "checkpoint not found" in result.stdout + result.stderr
