"""Predictor result -> label image + detections: ids, overlaps, class filter, max_instances, boxes."""
import numpy as np
import pytest
from std_msgs.msg import Header

from sparseinst_core import Instances
from sparseinst_core.inference.label_image import label_instances
from sparseinst_ros.detections import box_center_size, draw_overlay, resolve_class_filter, to_detection_array

CLASS_NAMES = ("circle", "square", "triangle")


def rect(height, width, x0, y0, x1, y1):
    """Boolean mask with the inclusive rectangle x0..x1, y0..y1 set."""
    mask = np.zeros((height, width), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def result(*instances, shape=(20, 30)):
    """A predictor result from (score, label, mask) triples, in the order given."""
    if not instances:
        return Instances(np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, *shape), bool))
    scores, labels, masks = zip(*instances)
    return Instances(np.array(scores, np.float32), np.array(labels, np.int64), np.stack(masks))


def test_ids_follow_descending_score_and_higher_score_wins_overlaps():
    low = rect(20, 30, 0, 0, 9, 9)
    high = rect(20, 30, 5, 5, 14, 14)
    out = label_instances(result((0.4, 0, low), (0.9, 1, high)))
    assert out.ids.tolist() == [1, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.4])
    assert out.class_ids.tolist() == [1, 0]
    np.testing.assert_array_equal(out.label_image == 1, high)
    np.testing.assert_array_equal(out.label_image == 2, low & ~high)
    assert out.label_image.dtype == np.uint16


def test_pixel_counts_and_boxes_describe_the_label_image():
    masks = [(0.8, 0, rect(20, 30, 2, 3, 12, 8)), (0.7, 2, rect(20, 30, 10, 6, 25, 18)),
             (0.6, 1, rect(20, 30, 0, 15, 4, 19))]
    out = label_instances(result(*masks))
    for instance_id, count, box in zip(out.ids, out.pixel_counts, out.boxes):
        ys, xs = np.nonzero(out.label_image == instance_id)
        assert count == len(xs)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    # instance 2 lost its top-left corner to instance 1, so its box starts lower
    assert out.boxes[1].tolist() == [10, 6, 25, 18] and out.pixel_counts[1] == 16 * 13 - 3 * 3


def test_hidden_and_empty_instances_are_dropped_and_ids_stay_contiguous():
    big = rect(20, 30, 0, 0, 19, 19)
    hidden = rect(20, 30, 2, 2, 5, 5)            # entirely under `big`
    empty = np.zeros((20, 30), bool)
    side = rect(20, 30, 25, 0, 29, 4)
    out = label_instances(result((0.9, 0, big), (0.8, 1, hidden), (0.7, 2, empty), (0.5, 2, side)))
    assert out.ids.tolist() == [1, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.5])
    assert set(np.unique(out.label_image).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(out.label_image == 2, side)


def test_class_filter_keeps_only_the_allowed_classes():
    masks = [(0.9, 0, rect(20, 30, 0, 0, 4, 4)), (0.8, 1, rect(20, 30, 10, 0, 14, 4)),
             (0.7, 2, rect(20, 30, 20, 0, 24, 4))]
    out = label_instances(result(*masks), allowed_classes=frozenset({0, 2}))
    assert out.class_ids.tolist() == [0, 2]
    assert out.ids.tolist() == [1, 2]
    assert not out.label_image[:, 10:15].any()


def test_max_instances_keeps_the_best_scores():
    masks = [(0.2 + 0.1 * i, 0, rect(20, 30, 5 * i, 0, 5 * i + 3, 3)) for i in range(5)]
    out = label_instances(result(*masks), max_instances=2)
    assert out.scores.tolist() == pytest.approx([0.6, 0.5])
    assert out.boxes[:, 0].tolist() == [20, 15]
    assert len(label_instances(result(*masks), max_instances=0)) == 0


def test_no_instances_give_an_empty_label_image():
    out = label_instances(result(shape=(7, 9)))
    assert len(out) == 0 and out.label_image.shape == (7, 9) and not out.label_image.any()
    assert out.boxes.shape == (0, 4)


def test_inconsistent_result_is_rejected():
    bad = Instances(np.zeros(2, np.float32), np.zeros(2, np.int64), np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match="expected scores"):
        label_instances(bad)


def test_class_filter_accepts_names_and_ids():
    assert resolve_class_filter([], CLASS_NAMES) is None
    assert resolve_class_filter(["square", "2"], CLASS_NAMES) == {1, 2}
    assert resolve_class_filter([" circle "], CLASS_NAMES) == {0}


def test_class_filter_rejects_unknown_names_and_ids():
    with pytest.raises(ValueError, match=r"unknown class 'hexagon'.*circle, square, triangle"):
        resolve_class_filter(["hexagon"], CLASS_NAMES)
    with pytest.raises(ValueError, match="class id 3 .* out of range"):
        resolve_class_filter(["3"], CLASS_NAMES)


def test_box_center_and_size_use_pixel_centres():
    assert box_center_size((2, 4, 5, 4)) == (3.5, 4.0, 4.0, 1.0)


def test_detection_array_matches_the_label_image():
    masks = [(0.9, 2, rect(20, 30, 1, 1, 6, 4)), (0.6, 0, rect(20, 30, 10, 10, 12, 19))]
    out = label_instances(result(*masks))
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = to_detection_array(out, header)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    assert [d.id for d in msg.detections] == ["1", "2"]
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["2", "0"]
    assert [d.results[0].hypothesis.score for d in msg.detections] == pytest.approx([0.9, 0.6])
    first = msg.detections[0].bbox
    assert (first.center.position.x, first.center.position.y, first.size_x, first.size_y) == (3.5, 2.5, 6, 4)
    assert msg.detections[1].header.frame_id == "camera_optical"


def test_the_overlay_writes_each_detection_id():
    instances = label_instances(result((0.9, 0, rect(60, 80, 5, 5, 40, 30)), (0.8, 1, rect(60, 80, 45, 35, 75, 55)),
                                       shape=(60, 80)))
    image = np.full((60, 80, 3), 100, np.uint8)
    overlay = draw_overlay(image, instances, CLASS_NAMES)
    np.testing.assert_array_equal(overlay, draw_overlay(image, instances.with_ids([1, 2]), CLASS_NAMES))
    tracked = draw_overlay(image, instances.with_ids([1, 47]), CLASS_NAMES)    # only the second label differs
    changed = np.nonzero((tracked != overlay).any(axis=2))
    assert len(changed[0]) and changed[0].min() >= 25          # the first label, around row 17, is unchanged
