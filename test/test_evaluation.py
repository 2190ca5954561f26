"""CocoMaskEvaluator against real pycocotools COCOeval, on a small synthetic dataset written by the test."""
import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparseinst_core.data.coco import CocoInstanceDataset
from sparseinst_core.data.synthetic import generate_synthetic_dataset
from sparseinst_core.training.evaluation import CocoMaskEvaluator

SUMMARY_KEYS = ("segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm/APm", "segm/APl")


@pytest.fixture(scope="module")
def val_dataset(tmp_path_factory):
    # Ground truth with polygons, RLE, crowd regions and an empty image; category ids 1, 3, 5, ...
    paths = generate_synthetic_dataset(tmp_path_factory.mktemp("shapes"), num_train=0, num_val=8, seed=2,
                                       image_size=128, empty_fraction=0.15, crowd_fraction=0.4)
    return CocoInstanceDataset(paths["val_annotations"], paths["val_images"])


def ground_truth_items(dataset):
    return [target for _, target in (dataset[i] for i in range(len(dataset)))]


def evaluate_predictions(dataset, predict, output_dir=None):
    """predict(target) -> (scores, labels, masks) for each ground-truth target."""
    evaluator = CocoMaskEvaluator(dataset.coco, dataset.label_to_category_id)
    for target in ground_truth_items(dataset):
        evaluator.update(target["image_id"], *predict(target))
    return evaluator.evaluate(output_dir)


def exact(target):
    return torch.ones(len(target["labels"])), target["labels"], target["masks"]


def test_ground_truth_as_predictions_scores_ap_one(val_dataset, capsys):
    metrics = evaluate_predictions(val_dataset, exact)
    for key in SUMMARY_KEYS:
        assert metrics[key] == pytest.approx(1.0) or math.isnan(metrics[key])   # NaN: no GT of that size
    assert metrics["segm/AP"] == pytest.approx(1.0) and metrics["segm/AP50"] == pytest.approx(1.0)
    assert any(key.startswith("segm/AP-") for key in metrics)
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed and "AP50" in printed


def test_ground_truth_without_area_or_iscrowd_is_evaluated(tmp_path):
    """Labelling tools often omit "area" and "iscrowd"; COCOeval needs both (KeyError at the end of training)."""
    paths = generate_synthetic_dataset(tmp_path, num_train=0, num_val=4, seed=3, image_size=96, crowd_fraction=0.0)
    data = json.loads(paths["val_annotations"].read_text())
    for ann in data["annotations"]:
        ann.pop("area", None)
        ann.pop("iscrowd", None)
    paths["val_annotations"].write_text(json.dumps(data))
    dataset = CocoInstanceDataset(paths["val_annotations"], paths["val_images"])
    metrics = evaluate_predictions(dataset, exact)
    assert metrics["segm/AP"] == pytest.approx(1.0)


def test_results_json_maps_labels_back_to_category_ids(val_dataset, tmp_path):
    evaluate_predictions(val_dataset, exact, output_dir=tmp_path)
    results = json.loads((tmp_path / "coco_instances_results.json").read_text())
    expected = sorted(ann["category_id"] for ann in val_dataset.coco.anns.values() if not ann["iscrowd"])
    assert sorted(r["category_id"] for r in results) == expected
    assert all(isinstance(r["segmentation"]["counts"], str) for r in results)
    assert set(val_dataset.label_to_category_id) - set(range(len(val_dataset.label_to_category_id)))


def test_shifted_masks_score_lower_but_above_zero(val_dataset):
    def shifted(target):
        return torch.ones(len(target["labels"])), target["labels"], torch.roll(target["masks"], 3, dims=2)

    ap = evaluate_predictions(val_dataset, shifted)["segm/AP"]
    assert 0.0 < ap < 0.9


def test_wrong_labels_score_zero(val_dataset):
    def relabelled(target):
        wrong = (target["labels"] + 1) % val_dataset.num_classes
        return torch.ones(len(wrong)), wrong, target["masks"]

    assert evaluate_predictions(val_dataset, relabelled)["segm/AP"] == 0.0


def test_no_predictions_give_ap_zero(val_dataset):
    def nothing(target):
        no_masks = torch.zeros((0, *target["orig_size"]), dtype=torch.bool)
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64), no_masks

    metrics = evaluate_predictions(val_dataset, nothing)
    assert metrics["segm/AP"] == 0.0 and metrics["segm/AP50"] == 0.0


def test_predictions_are_validated(val_dataset):
    evaluator = CocoMaskEvaluator(val_dataset.coco, val_dataset.label_to_category_id)
    target = next(t for t in ground_truth_items(val_dataset) if len(t["labels"]))
    scores, labels, masks = exact(target)
    with pytest.raises(ValueError, match="original image size"):
        evaluator.update(target["image_id"], scores, labels, masks[:, :-1])
    with pytest.raises(ValueError, match="boolean"):
        evaluator.update(target["image_id"], scores, labels, masks.float())
    with pytest.raises(ValueError, match="labels must be in"):
        evaluator.update(target["image_id"], scores, labels + 100, masks)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.update(123456, scores, labels, masks)
    with pytest.raises(ValueError, match="category ids"):
        CocoMaskEvaluator(val_dataset.coco, [1000])


def _evaluate_on_rank(rank, world_size, port, annotation_file, image_dir, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        dataset = CocoInstanceDataset(annotation_file, image_dir)
        evaluator = CocoMaskEvaluator(dataset.coco, dataset.label_to_category_id)
        # Rank 0 takes the even images, rank 1 the odd ones, and both see one image with instances, as a
        # padding DistributedSampler would repeat it: it must count once.
        shared = next(i for i in range(len(dataset)) if len(dataset[i][1]["labels"]))
        indices = sorted(set(range(rank, len(dataset), world_size)) | {shared})
        for index in indices:
            target = dataset[index][1]
            evaluator.update(target["image_id"], *exact(target))
        queue.put((rank, evaluator.evaluate()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_predictions_from_several_processes_are_gathered_and_evaluated_once(val_dataset):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_evaluate_on_rank, args=(2, port, str(val_dataset.annotation_file),
                                                str(val_dataset.image_dir), queue),
                       nprocs=2, start_method="spawn")
    metrics = dict(queue.get() for _ in range(2))
    assert metrics[0].keys() == metrics[1].keys()
    assert all(metrics[0][key] == pytest.approx(metrics[1][key], nan_ok=True) for key in metrics[0])
    assert metrics[0]["segm/AP"] == pytest.approx(1.0)
