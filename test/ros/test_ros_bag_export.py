"""`sparseinst_bag export`: frames of a recording to a COCO-format folder that pycocotools loads, that the
model's instances pre-label (polygons matching its masks), and that training/train.py trains on as it is."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from bag_fixtures import COMPRESSED_TOPIC, IMAGE_TOPIC, write_bag, write_params_file
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from ros_harness import CLASS_NAMES, MIN_SIZE

from sparseinst_core.inference import load_predictor
from sparseinst_core.inference.label_image import label_instances
from sparseinst_ros.tools.bag.cli import main
from sparseinst_ros.tools.processes import REPO

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def params_file(weights_file, tmp_path_factory):
    return write_params_file(tmp_path_factory.mktemp("params") / "params.yaml", weights_file)


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory, params_file):
    """A recording of 5 raw frames exported with --prelabel (every frame), and the frames as recorded."""
    root = tmp_path_factory.mktemp("export")
    frames = write_bag(root / "in", "bgr8", count=5, storage="sqlite3")
    assert main(["export", str(root / "in"), "--image-topic", IMAGE_TOPIC, "--output", str(root / "dataset"),
                 "--params-file", str(params_file), "--prelabel"]) == 0
    return root / "dataset", frames


def test_the_folder_loads_in_pycocotools_with_the_models_classes(prelabelled):
    dataset, frames = prelabelled
    coco = COCO(str(dataset / "annotations.json"))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == CLASS_NAMES
    images = [coco.imgs[i] for i in sorted(coco.imgs)]
    assert [image["frame_index"] for image in images] == list(range(5))
    for image, frame in zip(images, frames):
        assert (image["bag_timestamp_ns"], image["stamp"]) == (frame.timestamp, {"sec": frame.sec,
                                                                                  "nanosec": frame.nanosec})
        pixels = cv2.cvtColor(cv2.imread(str(dataset / "images" / image["file_name"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(pixels, frame.rgb)                        # raw frames: lossless PNG
    assert sorted(p.name for p in dataset.iterdir()) == ["annotations.json", "images"]


def test_prelabels_are_the_models_instances_as_polygons(prelabelled, weights_file):
    dataset, frames = prelabelled
    coco = COCO(str(dataset / "annotations.json"))
    predictor = load_predictor(weights_file, min_size=MIN_SIZE, max_size=2 * MIN_SIZE, device="cpu").predictor
    for image_id, frame in zip(sorted(coco.imgs), frames):
        expected = label_instances(predictor(frame.rgb))
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(annotations) == len(expected) > 0
        for annotation, instance_id, class_id, score in zip(annotations, expected.ids, expected.class_ids,
                                                            expected.scores):
            mask = expected.label_image == instance_id
            polygon_mask = coco.annToMask(annotation).astype(bool)
            iou = (mask & polygon_mask).sum() / (mask | polygon_mask).sum()
            assert iou >= 0.95, (image_id, instance_id, iou)
            assert all(isinstance(polygon, list) and len(polygon) >= 6 for polygon in annotation["segmentation"])
            assert annotation["category_id"] == class_id + 1 and annotation["score"] == pytest.approx(float(score))
            assert annotation["iscrowd"] == 0
            assert annotation["area"] == float(polygon_mask.sum())
            rle = mask_utils.encode(np.asfortranarray(polygon_mask.astype(np.uint8)))
            assert annotation["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())


def test_every_and_max_frames_select_frames_and_jpeg_is_kept_as_recorded(tmp_path, params_file, capsys):
    write_bag(tmp_path / "in", "jpeg", count=7)
    assert main(["export", str(tmp_path / "in"), "--image-topic", COMPRESSED_TOPIC, "--output",
                 str(tmp_path / "dataset"), "--params-file", str(params_file), "--every", "2",
                 "--max-frames", "3"]) == 0
    summary = capsys.readouterr().out
    assert "export: 3 of 3 frames of /camera/image_raw/compressed exported" in summary
    assert "instances:" not in summary                                        # no model ran on the frames
    data = json.loads((tmp_path / "dataset" / "annotations.json").read_text())
    assert [image["frame_index"] for image in data["images"]] == [0, 2, 4]
    assert [image["file_name"] for image in data["images"]] == ["frame_000000.jpg", "frame_000002.jpg",
                                                                "frame_000004.jpg"]
    assert data["annotations"] == []                                           # no --prelabel
    from rosbags.highlevel import AnyReader
    with AnyReader([tmp_path / "in"]) as reader:
        recorded = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == COMPRESSED_TOPIC]
    assert (tmp_path / "dataset" / "images" / "frame_000002.jpg").read_bytes() == recorded[2].data.tobytes()


def test_an_existing_folder_is_refused(tmp_path, params_file, capsys):
    write_bag(tmp_path / "in", "rgb8", count=1)
    (tmp_path / "dataset").mkdir()
    assert main(["export", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC, "--output",
                 str(tmp_path / "dataset"), "--params-file", str(params_file)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert list((tmp_path / "dataset").iterdir()) == []


def test_train_py_trains_on_the_exported_folder_as_it_is(prelabelled, tmp_path):
    dataset, _ = prelabelled
    annotations, images = str(dataset / "annotations.json"), str(dataset / "images")
    result = subprocess.run(
        [sys.executable, str(REPO / "training" / "train.py"), "--preset", "r18_giam", "--train-json", annotations,
         "--train-images", images, "--val-json", annotations, "--val-images", images, "--output-dir",
         str(tmp_path / "run"), "--max-iters", "2", "--batch-size", "2", "--input-sizes", "96", "--max-size", "128",
         "--workers", "0", "--device", "cpu", "--warmup-iters", "1"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "run" / "last_checkpoint.pth").is_file() and (tmp_path / "run" / "model_final.pth").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_classes"] == len(CLASS_NAMES)
