"""Generated RGB-D sequences: images, registered depth with sensor-like degradation, and the ground truth."""
import numpy as np
import pytest

from sparseinst_core.data.rgbd_sequences import MAX_DEPTH, MIN_DEPTH, RgbdSequence, RgbdSequenceConfig
from sparseinst_core.data.synthetic import SYNTHETIC_CLASSES


@pytest.fixture(scope="module")
def sequence():
    return RgbdSequence(RgbdSequenceConfig(num_frames=12, depth_size=(320, 240)), seed=3)


@pytest.fixture(scope="module")
def frames(sequence):
    return [sequence[i] for i in range(len(sequence))]


def depth_metres(frame) -> np.ndarray:
    metres = frame.depth.astype(np.float64) / 1000.0
    metres[frame.depth == 0] = np.nan
    return metres


def depth_pixels_of(obj, sequence) -> tuple[np.ndarray, np.ndarray]:
    """The depth pixels whose centres fall inside a ground-truth mask, through both intrinsics."""
    colour_k, depth_k = sequence.colour_k, sequence.depth_k
    rows, cols = np.mgrid[0:sequence.config.depth_size[1], 0:sequence.config.depth_size[0]]
    colour_u = np.rint((cols - depth_k[0, 2]) / depth_k[0, 0] * colour_k[0, 0] + colour_k[0, 2]).astype(int)
    colour_v = np.rint((rows - depth_k[1, 2]) / depth_k[1, 1] * colour_k[1, 1] + colour_k[1, 2]).astype(int)
    x, y = colour_u - obj.mask_offset[0], colour_v - obj.mask_offset[1]
    inside = (x >= 0) & (y >= 0) & (x < obj.mask.shape[1]) & (y < obj.mask.shape[0])
    inside[inside] = obj.mask[y[inside], x[inside]]
    return np.nonzero(inside)


def test_frames_have_colour_depth_and_stamps(sequence, frames):
    assert len(sequence) == 12
    for index, frame in enumerate(frames):
        assert frame.index == index and frame.stamp == pytest.approx(index / 30.0)
        assert frame.colour.shape == (480, 640, 3) and frame.colour.dtype == np.uint8
        assert frame.depth.shape == (240, 320) and frame.depth.dtype == np.uint16
    with pytest.raises(IndexError):
        sequence[12]


def test_the_cameras_share_the_optical_centre_and_field_of_view(sequence):
    colour_k, depth_k = sequence.colour_k, sequence.depth_k
    np.testing.assert_allclose([colour_k[0, 0], colour_k[0, 2], colour_k[1, 2]], [525.0, 319.5, 239.5])
    np.testing.assert_allclose([depth_k[0, 0], depth_k[0, 2], depth_k[1, 2]], [262.5, 159.5, 119.5])


def test_sequences_are_deterministic_for_a_seed(frames):
    again = RgbdSequence(RgbdSequenceConfig(num_frames=12, depth_size=(320, 240)), seed=3)[5]
    np.testing.assert_array_equal(again.colour, frames[5].colour)
    np.testing.assert_array_equal(again.depth, frames[5].depth)
    assert [o.track_id for o in again.objects] == [o.track_id for o in frames[5].objects]
    other = RgbdSequence(RgbdSequenceConfig(num_frames=12, depth_size=(320, 240)), seed=4)[5]
    assert not np.array_equal(other.colour, frames[5].colour)


def test_ground_truth_objects_are_consistent(sequence, frames):
    for frame in frames:
        covered = np.zeros((480, 640), int)
        for obj in frame.objects:
            assert 1 <= obj.track_id <= len(sequence.shapes)
            assert 0 <= obj.class_id < len(SYNTHETIC_CLASSES)
            assert 0 < obj.visible_fraction <= 1.0
            assert MIN_DEPTH - 0.2 <= obj.centroid[2] <= MAX_DEPTH + 0.2     # a tilted shape reaches a little further
            x, y = obj.mask_offset
            covered[y:y + obj.mask.shape[0], x:x + obj.mask.shape[1]] += obj.mask
            # The centroid of the visible surface projects inside (or next to) the visible part's box.
            u = 525.0 * obj.centroid[0] / obj.centroid[2] + 319.5
            v = 525.0 * obj.centroid[1] / obj.centroid[2] + 239.5
            assert x - 2 <= u <= x + obj.mask.shape[1] + 2 and y - 2 <= v <= y + obj.mask.shape[0] + 2
        assert covered.max() <= 1                                        # visible parts never overlap
    assert len({o.track_id for f in frames for o in f.objects}) >= 3


def test_objects_move_and_keep_their_track_ids(frames):
    first = {o.track_id: o for o in frames[0].objects}
    last = {o.track_id: o for o in frames[-1].objects}
    for track_id in set(first) & set(last):
        assert first[track_id].class_id == last[track_id].class_id
    moved = [np.linalg.norm(first[t].centre - last[t].centre) for t in set(first) & set(last)]
    assert max(moved) > 0.01                                           # metres in 11 frames


def test_depth_is_registered_to_the_colour_image_through_both_intrinsics(sequence, frames):
    for frame in frames[::4]:
        metres = depth_metres(frame)
        for obj in frame.objects:
            if obj.visible_fraction < 0.5 or obj.mask.sum() < 500:
                continue
            rows, cols = depth_pixels_of(obj, sequence)
            assert np.nanmedian(metres[rows, cols]) == pytest.approx(obj.centroid[2], rel=0.05)


def test_depth_is_degraded_like_a_stereo_camera(sequence, frames):
    config = sequence.config
    wall = np.ones((240, 320), bool)
    for obj in frames[0].objects:                                      # the wall: no object within 4 px
        rows, cols = depth_pixels_of(obj, sequence)
        for dr in range(-4, 5, 2):
            for dc in range(-4, 5, 2):
                wall[np.clip(rows + dr, 0, 239), np.clip(cols + dc, 0, 319)] = False
    metres = depth_metres(frames[0])
    residual = metres[wall] - config.background_distance
    expected_sigma = np.hypot(config.depth_noise, config.depth_wobble) * config.background_distance ** 2
    assert np.nanstd(residual) == pytest.approx(expected_sigma, rel=0.5)
    assert abs(np.nanmedian(residual)) < expected_sigma                 # unbiased
    holes = frames[0].depth == 0
    assert 0.003 < holes.mean() < 0.2                                  # holes, but mostly measured
    # Noise grows with distance: the near objects are measured far more precisely than the wall.
    near = [o for o in frames[0].objects if o.centroid[2] < 2.0 and o.visible_fraction > 0.5]
    for obj in near:
        rows, cols = depth_pixels_of(obj, sequence)
        values = metres[rows, cols]
        spread = np.nanpercentile(values, 75) - np.nanpercentile(values, 25)
        assert spread < np.nanpercentile(residual, 75) - np.nanpercentile(residual, 25)


def test_one_object_per_class_when_asked():
    sequence = RgbdSequence(RgbdSequenceConfig(num_frames=2, num_objects=(6, 6), distinct_classes=True), seed=0)
    assert sorted(shape.label for shape in sequence.shapes) == list(range(len(SYNTHETIC_CLASSES)))


@pytest.mark.parametrize("settings, message", [
    (dict(object_depths=(0.2, 3.0)), "object_depths"),
    (dict(background_distance=3.0), "behind the objects"),
    (dict(num_objects=(3, 2)), "num_objects"),
    (dict(num_objects=(7, 7), distinct_classes=True), "at most 6"),
    (dict(depth_size=(16, 16)), "at least 32x32"),
])
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RgbdSequenceConfig(**settings)


@pytest.mark.slow
def test_the_shipped_demo_model_detects_the_objects():
    """At the node's default input size (the model's own test size), most visible objects are found."""
    from sparseinst_core.inference import load_predictor
    from sparseinst_core.scene import InstanceMask, mask_iou

    predictor = load_predictor("demo").predictor
    sequence = RgbdSequence(RgbdSequenceConfig(num_frames=60, frame_rate=15.0, num_objects=(3, 5),
                                               distinct_classes=True), seed=7)
    found = total = 0
    for index in (0, 20, 40):
        frame = sequence[index]
        result = predictor(frame.colour)
        detected = [(InstanceMask.tight(mask), label) for mask, label in zip(result.masks, result.labels)]
        for obj in frame.objects:
            if obj.visible_fraction < 0.5:
                continue
            truth = InstanceMask(obj.mask, *obj.mask_offset)
            total += 1
            found += any(mask_iou(truth, mask) >= 0.5 and label == obj.class_id for mask, label in detected)
    assert total >= 8 and found / total >= 0.8
