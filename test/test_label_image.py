"""Instances -> label image: painting order, overlaps, dropped instances, ids, and crops vs full masks."""
import numpy as np
import pytest

from sparseinst_core import Instances
from sparseinst_core.inference.label_image import MAX_LABEL, label_instances
from sparseinst_core.inference.mask_crops import MaskCrops


def box_mask(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def instances(*triples, shape=(20, 30)):
    """Instances from (score, label, mask) triples, masks given as crops."""
    scores, labels, masks = zip(*triples) if triples else ((), (), np.zeros((0, *shape), bool))
    masks = np.stack(masks) if triples else masks
    return Instances(np.array(scores, np.float32), np.array(labels, np.int64), mask_crops=MaskCrops.from_masks(masks))


def random_overlapping_instances(seed, count=12, shape=(48, 64)):
    """Overlapping blobs of random sizes (some empty, some equal scores) as full masks."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, *shape), dtype=bool)
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    for mask in masks[1:]:
        cy, cx, ry, rx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1, 20), rng.uniform(1, 25)
        mask[:] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        mask &= rng.random(shape) < 0.9
    scores = rng.choice([0.2, 0.5, 0.7, 0.9], count) + rng.choice([0.0, 0.01], count)
    return Instances(scores.astype(np.float32), rng.integers(0, 3, count), masks)


def painted_by_definition(result, allowed_classes, max_instances):
    """Each pixel owned by the best-scoring allowed instance covering it; owners numbered by score."""
    order = np.argsort(-result.scores.astype(np.float64), kind="stable")
    order = [i for i in order if allowed_classes is None or result.labels[i] in allowed_classes][:max_instances]
    owner = np.full(result.masks.shape[1:], -1)
    for index in reversed(order):
        owner[result.masks[index]] = index
    kept = [index for index in order if (owner == index).any()]
    label_image = np.zeros(owner.shape, dtype=np.uint16)
    for instance_id, index in enumerate(kept, start=1):
        label_image[owner == index] = instance_id
    return label_image, kept


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("allowed_classes,max_instances", [(None, 100), (frozenset({0, 2}), 100), (None, 4)])
def test_label_image_from_crops_follows_the_definition(seed, allowed_classes, max_instances):
    result = random_overlapping_instances(seed)
    out = label_instances(Instances(result.scores, result.labels, mask_crops=result.mask_crops),
                          allowed_classes, max_instances)
    label_image, kept = painted_by_definition(result, allowed_classes, max_instances)
    np.testing.assert_array_equal(out.label_image, label_image)
    assert out.ids.tolist() == list(range(1, len(kept) + 1))
    assert out.scores.tolist() == result.scores[kept].tolist()
    assert out.class_ids.tolist() == result.labels[kept].tolist()
    for instance_id, count, box in zip(out.ids, out.pixel_counts, out.boxes):
        ys, xs = np.nonzero(out.label_image == instance_id)
        assert count == len(xs) and box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_an_instance_in_several_crops_is_painted_once():
    crops = MaskCrops((6, 8), 1, np.array([0, 0]), np.array([[0, 0, 4, 3], [2, 1, 6, 4]]), np.ones(12 + 12, bool))
    out = label_instances(Instances(np.array([0.9], np.float32), np.array([1]), mask_crops=crops))
    assert out.pixel_counts.tolist() == [12 + 12 - 4] and out.boxes.tolist() == [[0, 0, 5, 3]]
    np.testing.assert_array_equal(out.label_image == 1, crops.to_masks()[0])


def test_hidden_and_empty_instances_are_dropped():
    shape = (20, 30)
    out = label_instances(instances((0.9, 0, box_mask(shape, 0, 0, 20, 20)), (0.8, 1, box_mask(shape, 2, 2, 6, 6)),
                                    (0.7, 2, np.zeros(shape, bool)), (0.5, 2, box_mask(shape, 25, 0, 30, 5))))
    assert out.ids.tolist() == [1, 2] and out.scores.tolist() == pytest.approx([0.9, 0.5])
    assert out.label_image.dtype == np.uint16 and set(np.unique(out.label_image).tolist()) == {0, 1, 2}


def test_no_instances_give_an_empty_label_image():
    out = label_instances(instances(shape=(7, 9)))
    assert len(out) == 0 and out.label_image.shape == (7, 9) and not out.label_image.any()
    assert out.boxes.shape == (0, 4)


def test_inconsistent_result_and_max_instances_are_rejected():
    with pytest.raises(ValueError, match="expected scores"):
        label_instances(Instances(np.zeros(2, np.float32), np.zeros(2, np.int64), np.zeros((3, 4, 4), bool)))
    with pytest.raises(ValueError, match="max_instances"):
        label_instances(instances(), max_instances=MAX_LABEL + 1)


def test_other_ids_relabel_the_image_and_keep_the_rest():
    shape = (20, 30)
    out = label_instances(instances((0.9, 0, box_mask(shape, 0, 0, 10, 10)), (0.6, 1, box_mask(shape, 5, 5, 20, 15))))
    tracked = out.with_ids([7, 300])
    assert tracked.ids.tolist() == [7, 300] and tracked.label_image.dtype == np.uint16
    np.testing.assert_array_equal(tracked.label_image == 7, out.label_image == 1)
    np.testing.assert_array_equal(tracked.label_image == 300, out.label_image == 2)
    np.testing.assert_array_equal(tracked.boxes, out.boxes)
    for bad in ([7, 7], [0, 1], [1, MAX_LABEL + 1], [1]):
        with pytest.raises(ValueError, match="distinct ids"):
            out.with_ids(bad)


def test_mask_crops_of_the_labels_are_the_visible_pixels():
    result = random_overlapping_instances(seed=2)
    out = label_instances(result)
    masks = out.mask_crops().to_masks()
    np.testing.assert_array_equal(masks, out.label_image[None] == out.ids[:, None, None])
