"""The mask tracker: ids that persist through motion, crossings, occlusion, absence and skipped frames; id
numbering; class consistency; global matching. Also the mask crops it works on.

Scenes are squares of 40 px (crops at their top-left corner) moving in a 640x480 image.
"""
import numpy as np
import pytest

from sparseinst_core.scene import (
    MAX_TRACK_ID, InstanceMask, MaskTracker, Observation, TrackerConfig, mask_iou, masks_from_label_image,
)

SIZE = 40


def square(x: float, y: float, size: int = SIZE) -> InstanceMask:
    return InstanceMask(np.ones((size, size), bool), int(round(x)), int(round(y)))


def seen(class_id: int, x: float, y: float, score: float = 0.9, size: int = SIZE, centroid=None) -> Observation:
    return Observation(class_id, score, square(x, y, size), None if centroid is None else np.asarray(centroid))


def run(tracker: MaskTracker, frames: list[tuple[float, list[Observation]]]) -> list[list[int]]:
    """The ids of each frame, in input order."""
    return [tracker.update(stamp, observations).ids.tolist() for stamp, observations in frames]


# --- masks ------------------------------------------------------------------------------------------

def test_a_mask_crop_trims_to_its_bounding_box_and_back():
    full = np.zeros((6, 8), bool)
    full[2:4, 3:7] = True
    full[3, 1] = True
    crop = InstanceMask.tight(full)
    assert (crop.x, crop.y, crop.mask.shape, crop.area) == (1, 2, (2, 6), 9)
    assert crop.box == (1, 2, 7, 4)
    np.testing.assert_array_equal(crop.to_image(6, 8), full)
    np.testing.assert_array_equal(crop.centre(), [3.5, 2.5])
    assert InstanceMask.tight(np.zeros((3, 3), bool)).area == 0


def test_mask_iou_counts_the_overlap_of_the_crops_in_image_pixels():
    a = square(0, 0, 10)                                               # 100 px
    b = square(5, 0, 10)                                               # overlaps a in 5 x 10 = 50 px
    assert mask_iou(a, b) == pytest.approx(50 / 150)
    assert mask_iou(a, square(10, 0, 10)) == 0.0                       # touching, not overlapping
    ring = InstanceMask(np.pad(np.zeros((6, 6), bool), 2, constant_values=True), 0, 0)   # 10x10, 64 px
    assert mask_iou(ring, square(2, 2, 6)) == 0.0                      # inside the ring's hole
    assert mask_iou(ring, a) == pytest.approx(64 / 100)


def test_a_label_image_gives_one_mask_per_id():
    labels = np.zeros((5, 6), np.uint16)
    labels[1:3, 2:4] = 7
    labels[4, 0] = 65535
    masks = masks_from_label_image(labels)
    assert sorted(masks) == [7, 65535]
    assert (masks[7].x, masks[7].y, masks[7].area) == (2, 1, 4)
    np.testing.assert_array_equal(masks[65535].to_image(5, 6), labels == 65535)


# --- tracking ---------------------------------------------------------------------------------------

def test_an_object_keeps_its_id_and_is_confirmed_after_min_hits():
    tracker = MaskTracker(TrackerConfig(track_min_hits=3))
    answers = [tracker.update(0.1 * i, [seen(0, 100 + 12 * i, 200)]) for i in range(10)]
    assert {int(answer.ids[0]) for answer in answers} == {1}
    assert [bool(answer.confirmed[0]) for answer in answers[:4]] == [False, False, True, True]


def test_every_instance_gets_a_distinct_nonzero_id_in_input_order():
    tracker = MaskTracker()
    rng = np.random.default_rng(0)
    for frame in range(20):
        observations = [seen(int(rng.integers(3)), *rng.uniform(0, 600, 2)) for _ in range(int(rng.integers(0, 12)))]
        answer = tracker.update(0.1 * frame, observations)
        assert len(answer) == len(observations)
        assert (answer.ids > 0).all() and len(set(answer.ids.tolist())) == len(observations)


def test_ids_persist_when_two_objects_of_one_class_cross():
    # A moves right, B left along the same row; at the crossing their masks overlap completely.
    frames = [(0.1 * i, [seen(0, 100 + 20 * i, 200), seen(0, 500 - 20 * i, 200)]) for i in range(21)]
    ids = run(MaskTracker(), frames)
    assert all(frame == ids[0] for frame in ids)


def test_depth_separates_objects_that_cross_in_the_image_without_moving_in_it():
    # Two objects at 1 m and 3 m take each other's place in the image (a swap the image cannot explain):
    # the ranges from the camera say which is which.
    near, far = [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]
    frames = [(0.0, [seen(0, 100, 200, centroid=near), seen(0, 110, 200, centroid=far)]),
              (0.1, [seen(0, 100, 200, centroid=near), seen(0, 110, 200, centroid=far)]),
              (0.2, [seen(0, 100, 200, centroid=far), seen(0, 110, 200, centroid=near)])]
    ids = run(MaskTracker(), frames)
    assert ids[2] == ids[1][::-1]
    without_depth = run(MaskTracker(), [(stamp, [seen(o.class_id, o.mask.x, o.mask.y) for o in observations])
                                        for stamp, observations in frames])
    assert without_depth[2] == without_depth[1]                        # the image alone follows positions


def test_an_object_hidden_behind_another_keeps_its_id():
    # A (class 0) passes behind B (class 0, still): its visible part shrinks, it is gone for 0.4 s, then it
    # reappears on the other side where its constant velocity puts it.
    tracker = MaskTracker()
    ids_a, ids_b = [], []
    for i in range(30):
        stamp, x = 0.1 * i, 100 + 15 * i                               # A: 150 px/s to the right
        occluder = seen(0, 300, 200, size=80)
        visible = [max(0, 300 - x), max(0, x + SIZE - 380)]            # A's columns left and right of B
        width = max(visible)
        observations = [occluder]
        if width >= 10:                                                # enough of A shows on one side
            left = visible[0] >= visible[1]
            crop = InstanceMask(np.ones((SIZE, width), bool), x if left else 380, 220)
            observations.append(Observation(0, 0.9, crop))
        answer = tracker.update(stamp, observations)
        ids_b.append(int(answer.ids[0]))
        if len(observations) == 2:
            ids_a.append(int(answer.ids[1]))
    assert len(set(ids_b)) == 1
    assert len(set(ids_a)) == 1 and ids_a[0] != ids_b[0]


def test_a_returning_object_gets_its_old_id_within_max_age_and_a_new_one_after():
    config = TrackerConfig(track_max_age=1.5)
    tracker = MaskTracker(config)
    first = run(tracker, [(0.1 * i, [seen(0, 200, 200)]) for i in range(5)])
    back = tracker.update(0.4 + 1.2, [seen(0, 205, 203)]).ids[0]       # unseen for 1.2 s
    assert back == first[-1][0]
    later = tracker.update(1.6 + 1.6, [seen(0, 205, 203)]).ids[0]      # unseen for 1.6 s > max age
    assert later != back


def test_lost_tracks_are_forgotten_after_max_age_and_tentative_ones_sooner():
    tracker = MaskTracker(TrackerConfig(track_max_age=1.0, tentative_max_age=0.3))
    run(tracker, [(0.1 * i, [seen(0, 100, 100)]) for i in range(4)])    # confirmed
    tracker.update(0.4, [seen(0, 100, 100), seen(1, 400, 300)])         # plus a one-frame detection
    assert tracker.num_tracks == 2
    tracker.update(0.8, [])
    assert tracker.num_tracks == 1                                      # the tentative one, unseen 0.4 s
    tracker.update(1.5, [])
    assert tracker.num_tracks == 0                                      # unseen 1.1 s


def test_skipped_frames_are_bridged_by_the_stamps():
    # 300 px/s with gaps of up to 0.3 s: the object moves up to 90 px (over twice its size) between frames.
    stamps = np.cumsum([0.0, 0.033, 0.1, 0.3, 0.033, 0.2, 0.066, 0.3, 0.3, 0.1])
    ids = run(MaskTracker(), [(stamp, [seen(0, 50 + 300 * stamp, 200)]) for stamp in stamps])
    assert {frame[0] for frame in ids} == {1}


def test_a_turn_does_not_lose_the_object():
    # 200 px/s to the right, then straight back (a bounce), seen at 10 Hz with one frame missing at the turn.
    xs = [100 + 20 * i for i in range(10)] + [None] + [280 - 20 * i for i in range(1, 8)]
    frames = [(0.1 * i, [] if x is None else [seen(0, x, 200)]) for i, x in enumerate(xs)]
    ids = run(MaskTracker(), frames)
    assert {frame[0] for frame in ids if frame} == {1}


def test_an_object_never_changes_class():
    tracker = MaskTracker()
    ids = run(tracker, [(0.1 * i, [seen(0, 100, 200), seen(1, 110, 200)]) for i in range(4)])
    # The two objects take each other's place: ids follow the classes, not the positions.
    swapped = tracker.update(0.4, [seen(1, 100, 200), seen(0, 110, 200)]).ids.tolist()
    assert swapped == ids[-1][::-1]


def test_a_class_flip_for_one_frame_gets_a_new_id_and_the_old_one_returns():
    tracker = MaskTracker()
    before = run(tracker, [(0.1 * i, [seen(0, 100, 200)]) for i in range(4)])[-1][0]
    flipped = tracker.update(0.4, [seen(3, 100, 200)]).ids[0]
    after = tracker.update(0.5, [seen(0, 100, 200)]).ids[0]
    assert flipped != before and after == before


def test_many_to_one_conflicts_are_resolved_globally():
    # A at x=0 and B at x=30 (same class, still); next they are at 20 and 50. Greedy matching would give the
    # closest pair (B, 20) first and leave A nothing; the global assignment moves both by +20.
    tracker = MaskTracker()
    a, b = tracker.update(0.0, [seen(0, 0, 200), seen(0, 30, 200)]).ids.tolist()
    assert tracker.update(0.1, [seen(0, 20, 200), seen(0, 50, 200)]).ids.tolist() == [a, b]


def test_a_low_score_fragment_cannot_pull_a_track_off_its_object():
    # Track T is established; a stray detection beside it started a tentative track F. Next frame T's object
    # moved a little (confident) and a low-score sliver sits where T was. Taking the sliver for T and the
    # object for F would cost less in one round; confident instances are matched first.
    tracker = MaskTracker()
    track = run(tracker, [(0.1 * i, [seen(2, 100, 200, size=60)]) for i in range(3)])[-1][0]
    tracker.update(0.3, [seen(2, 100, 200, size=60), seen(2, 130, 200, size=60, score=0.3)])
    sliver = Observation(2, 0.25, square(125, 225, 10))
    answer = tracker.update(0.4, [seen(2, 110, 200, size=60, score=0.6), sliver])
    assert answer.ids[0] == track and answer.ids[1] != track


def test_a_detection_at_another_depth_does_not_continue_a_track():
    # Where an object 1 m away was, another one appears 3 m away (the first left the view): a new id.
    tracker = MaskTracker()
    first = run(tracker, [(0.1 * i, [seen(0, 100, 200, centroid=[0.0, 0.0, 1.0])]) for i in range(4)])[-1][0]
    assert tracker.update(0.4, [seen(0, 100, 200, centroid=[0.0, 0.0, 3.0])]).ids[0] != first
    assert tracker.update(0.5, [seen(0, 100, 200, centroid=[0.0, 0.0, 1.05])]).ids[0] == first


def test_ids_wrap_around_after_65535_skipping_ids_still_in_use():
    tracker = MaskTracker(TrackerConfig(tentative_max_age=0.5, track_max_age=2.0))
    keeper = seen(0, 0, 0)                                             # one object seen throughout: id 1
    births_per_frame = 100
    stamp, issued = 0.0, []
    while len(issued) < MAX_TRACK_ID + 150:
        # New objects each frame, of classes no earlier one has, so each gets a new id; earlier ones are
        # forgotten (tentative, unseen for more than 0.5 s after two frames).
        frame_class = 1 + len(issued) // births_per_frame
        observations = [keeper] + [seen(frame_class, 5 * (k % 100), 50 + k) for k in range(births_per_frame)]
        answer = tracker.update(stamp, observations)
        assert answer.ids[0] == 1
        issued += answer.ids[1:].tolist()
        stamp += 0.4
    assert issued[:3] == [2, 3, 4]
    wrap = issued.index(MAX_TRACK_ID)
    assert issued[wrap + 1:wrap + 4] == [2, 3, 4]                      # 1 is still held by the keeper
    assert max(issued) == MAX_TRACK_ID and min(issued) >= 2


def test_a_stamp_going_back_starts_afresh_with_new_ids():
    tracker = MaskTracker()
    old = run(tracker, [(10.0 + 0.1 * i, [seen(0, 100, 100)]) for i in range(3)])[-1][0]
    restarted = tracker.update(0.0, [seen(0, 100, 100)]).ids[0]
    assert restarted != old and tracker.num_tracks == 1


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="track_min_hits"):
        TrackerConfig(track_min_hits=0)
    with pytest.raises(ValueError, match="track_max_age"):
        TrackerConfig(track_max_age=0.0)
